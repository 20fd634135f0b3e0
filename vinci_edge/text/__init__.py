"""Text side: the torch-free tokenizer, chat templates, streaming detokenization and an offline
trained tokenizer for test checkpoints."""

from vinci_edge.text.stream_decoder import StreamDecoder
from vinci_edge.text.tokenizer import TextTokenizer

__all__ = ["StreamDecoder", "TextTokenizer"]
