"""Bytes as people read them, one way everywhere: the scheduler's refusals, the estimate's
breakdown and the CLI's tables then quote the same figure for the same model."""

from __future__ import annotations

GiB = 2**30
MiB = 2**20


def format_size(n_bytes: int | float | None, missing: str = "?") -> str:
    """``6.1 GiB`` from 1 GiB up, ``512 MiB`` below it; ``missing`` when the size is not known (None)."""
    if n_bytes is None:
        return missing
    if abs(n_bytes) >= GiB:
        return f"{n_bytes / GiB:.1f} GiB"
    return f"{n_bytes / MiB:.0f} MiB"
