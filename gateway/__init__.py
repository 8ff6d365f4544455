"""llamadock gateway: one OpenAI-compatible endpoint in front of many llama-servers."""

__version__ = "0.1.0"
