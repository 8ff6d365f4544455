"""The errors the orchestrator answers with, as factories of common.errors.ApiError: the same
JSON shape as the gateway's (OpenAI's), so the gateway forwards them unchanged."""

from __future__ import annotations

import errno

from common.errors import ApiError


def not_found(name: str, known: list[str]) -> ApiError:
    listing = ", ".join(sorted(known)) or "none"
    return ApiError(404, f"No model named '{name}' (known: {listing}).", "model_not_found", "name")


def catalog_not_saved(path: object, exc: OSError) -> ApiError:
    """The catalog could not be written (the old file is intact: it is replaced atomically)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(507, f"The catalog {path} could not be saved: no space left on its filesystem. "
                        "It is unchanged; free some space and try again.", "catalog_storage_full")
    return ApiError(503, f"The catalog {path} could not be saved: {exc.strerror or exc}. It is unchanged; "
                    "make its directory writable and try again.", "catalog_not_writable")
