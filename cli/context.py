"""What the chat asks the gateway to keep a conversation within the model's context: the
context window of one request, and token counts by the model's own tokenizer.

The window is the context of one slot (``ctx_size`` / ``parallel``, what llama-server gives one
request): from the gateway's ``/status`` for a model it schedules, else from the model server's
own ``/props`` (``/upstream/NAME/props``). Tokens are counted by the server's ``/tokenize``
(through ``/upstream``), since tokenizers differ too much for a character estimate to be both
safe and useful (English is ~4 bytes a token, random or CJK text 1-2). It is asked only when the
conversation could be too long: a message has at most as many tokens as UTF-8 bytes (every
token stands for at least one byte; the template's own tokens are ``MESSAGE_OVERHEAD``), so
while that bound fits, nothing is asked at all; each message is tokenized once.
"""

from __future__ import annotations

from urllib.parse import quote

from pydantic import BaseModel, Field

from contract.status import GatewayStatus

from .api import Api, CallFailed
from .trimming import MESSAGE_OVERHEAD, Message


class _Generation(BaseModel):
    n_ctx: int | None = None


class ServerProps(BaseModel):
    """llama-server's ``GET /props``, the part read here."""
    default_generation_settings: _Generation = Field(default_factory=_Generation)


class Tokenized(BaseModel):
    """llama-server's ``POST /tokenize`` answer."""
    tokens: list[int | dict] = Field(default_factory=list)


def context_window(api: Api, model: str) -> int | None:
    """Tokens one request to ``model`` may hold; None when it cannot be learned (no trimming then)."""
    try:
        status = api.get(GatewayStatus, "GET", "/status")
        scheduled = status.scheduler.models.get(model) if status.scheduler else None
        if scheduled is not None and scheduled.ctx_size:  # 0: the model's own, which only the server knows
            return scheduled.ctx_size // max(1, scheduled.parallel or 1)
    except CallFailed:
        pass
    try:
        return api.get(ServerProps, "GET", f"/upstream/{quote(model, safe='')}/props").default_generation_settings.n_ctx
    except CallFailed:
        return None


def byte_bound(message: Message) -> int:
    """At least the message's tokens, whatever the tokenizer."""
    return len(message.get("content", "").encode("utf-8")) + MESSAGE_OVERHEAD


class TokenCounter:
    def __init__(self, api: Api) -> None:
        self.api = api
        self._known: dict[tuple[str, str], int] = {}

    def exact(self, model: str, message: Message) -> int:
        """The message's tokens by ``model``'s tokenizer, plus the template's; the byte bound if the
        server cannot say."""
        content = message.get("content", "")
        key = (model, content)
        if key not in self._known:
            try:
                answer = self.api.get(Tokenized, "POST", f"/upstream/{quote(model, safe='')}/tokenize",
                                      json={"content": content, "add_special": False})
                self._known[key] = len(answer.tokens) + MESSAGE_OVERHEAD
            except CallFailed:
                return byte_bound(message)
        return self._known[key]
