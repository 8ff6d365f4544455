"""Which server answers which model name: the route table (``table.py``) and the registries
that fill it (the orchestrator's listing, static upstreams)."""
