"""Errors the orchestrator answers with, in the same JSON shape as the gateway's (OpenAI's)."""

from __future__ import annotations

import errno

from fastapi.responses import JSONResponse


class OpError(Exception):
    """An operation refused or failed; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.log_tail = log_tail or []

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": "invalid_request_error" if self.status < 500 else "server_error",
                 "param": self.param, "code": self.code}
        if self.log_tail:
            error["log_tail"] = self.log_tail
        return JSONResponse({"error": error}, status_code=self.status)


def not_found(name: str, known: list[str]) -> OpError:
    listing = ", ".join(sorted(known)) or "none"
    return OpError(404, f"No model named '{name}' (known: {listing}).", "model_not_found", "name")


def catalog_not_saved(path: object, exc: OSError) -> OpError:
    """The catalog could not be written (the old file is intact: it is replaced atomically)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OpError(507, f"The catalog {path} could not be saved: no space left on its filesystem. "
                       "It is unchanged; free some space and try again.", "catalog_storage_full")
    return OpError(503, f"The catalog {path} could not be saved: {exc.strerror or exc}. It is unchanged; "
                   "make its directory writable and try again.", "catalog_not_writable")
