"""Serving live sessions to many cameras on Triton Inference Server (`vinci-edge serve`), and the
client that streams a camera to it (`vinci_edge.serve.client`)."""
