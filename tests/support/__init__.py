"""Test helpers: free ports, real llama-server processes, tiny GGUF models."""
