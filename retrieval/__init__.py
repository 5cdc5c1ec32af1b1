"""Korean/English semantic search over Korean summaries of Hugging Face Daily Papers."""

__version__ = "0.1.0"
