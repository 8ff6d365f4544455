"""The gateway's HTTP surfaces: the API dialects (``dialect.py``: the protocol; ``openai``,
``anthropic``, ``ollama``), the model lists in each API's shape, admin and status.

A surface reads and writes its own API's shapes and nothing else; every request it relays goes
through the one exchange (gateway/proxy/exchange.py).
"""
