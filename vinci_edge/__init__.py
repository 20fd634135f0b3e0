"""vinci-edge: stage-wise export and a torch-free runtime for OmniVinci omni-modal LLMs."""

__version__ = "0.1.0"
