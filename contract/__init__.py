"""What crosses a service boundary: the types the orchestrator serves and the gateway and the CLI
read, and the gateway's own views that the CLI reads.

Pure pydantic, no Docker, no web framework: each service parses a peer's JSON once, into these
types, and reads fields, never dict keys.

- ``spec``: a model as a user declares it (``ModelSpec``).
- ``listing``: a model as it is now (``ModelState``, ``ModelStatus``) and the orchestrator's
  whole answer (``Listing``).
- ``pools``: one identity for a memory pool (``PoolId``: a node's GPU or memory budget) and
  what a backend reports of it (``Pool``).
- ``placement``: where the scheduler put a model (``Placement``, the start's body).
- ``gpu``: what NVML sees (the gateway's ``/gpu``).
- ``status``: the gateway's ``/status``: routes, GPUs and the scheduler's view.
- ``activity``: one request as the gateway saw it (``ActivityRecord``, ``/admin/activity``).
"""
