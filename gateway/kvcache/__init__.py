"""Conversations' KV caches kept across a model's stops: files, the restore decision, the keeper."""
