"""Small helpers the gateway, the orchestrator and the CLI share, one module per concept, so a
rule (an error's shape, a token check, how a size reads, how a file is replaced) is written once.

- ``errors``: ``ApiError``, the OpenAI-format error both services answer with, and their handlers.
- ``auth``: the constant-time bearer-token check.
- ``sizes``: bytes as people read them (``6.1 GiB``, ``512 MiB``).
- ``files``: ``atomic_write``, a file replaced whole or not at all.
- ``logs``: how both services log (plain or JSON lines; routine lines at DEBUG).
"""
