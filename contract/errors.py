"""The error body both services answer with: OpenAI's, so OpenAI clients raise their usual
exceptions, and a peer reads it as a type rather than by keys.

    {"error": {"message": "...", "type": "...", "param": null, "code": "...", ...}}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # llamadock adds fields (log_tail, queue_length): clients skip them

    message: str
    type: str | None = None
    param: str | None = None
    code: str | None = None
    log_tail: list[str] = []  # the orchestrator's: a server's last log lines when it failed to start


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_detail(content: bytes) -> ErrorDetail | None:
    """The error in a response body, or None when the body is not one (a proxy's HTML page)."""
    try:
        return ErrorBody.model_validate_json(content).error
    except ValidationError:
        return None
