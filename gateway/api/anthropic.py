"""Anthropic's Messages API, which llama-server speaks itself: requests and answers go through
untouched, as OpenAI's do. Only a stream's error event is Anthropic's own
(``{"type": "error", "error": {"type": "api_error", "message": ...}}``); an error before the
answer is OpenAI's JSON, as it always was here (Anthropic's SDK reads its status and message).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request

from common.errors import ApiError

from ..auth import require_api_key
from ..proxy.exchange import relay_by_body
from .openai import OpenAI, body_doc


class Anthropic(OpenAI):
    name = "anthropic"

    def stream_error(self, error: ApiError) -> bytes:
        payload = {"type": "error", "error": {"type": "api_error", "message": error.message}}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


DIALECT = Anthropic()

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/messages", tags=["Anthropic"], **body_doc("messages", "Anthropic Messages API (served by llama-server)"))
async def messages(request: Request):
    return await relay_by_body(request, DIALECT, "messages")


@router.post("/v1/messages/count_tokens", tags=["Anthropic"], **body_doc("messages", "Anthropic token count"))
async def messages_count_tokens(request: Request):
    return await relay_by_body(request, DIALECT, "messages/count_tokens")
