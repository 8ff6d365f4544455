"""llama-server's slot API as the KV cache keeper uses it: typed answers, thin calls.

``GET /slots`` (``--slots``: what each slot holds), ``POST /slots/{id}?action=save|restore``
(``--slot-save-path``: a file name inside the model's directory), ``POST /apply-template`` and
``POST /tokenize`` (the exact tokens a chat request's prompt becomes: the template the server
itself applies, tokenized as its completion path does, with special tokens added and parsed),
and its ``/metrics`` (prompt processing speed). Each answer is parsed once into its type.
"""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ValidationError


class SlotView(BaseModel):
    """One entry of ``GET /slots`` (the fields used here)."""
    id: int
    n_ctx: int = 0
    is_processing: bool = False
    id_task: int | None = None  # absent on a slot that never ran a task
    n_prompt_tokens: int = 0  # the tokens its cache holds (prompt and answer)


class SlotTimings(BaseModel):
    save_ms: float | None = None
    restore_ms: float | None = None


class SlotAnswer(BaseModel):
    """The answer of a save (``n_saved``, ``n_written``) or a restore (``n_restored``, ``n_read``)."""
    id_slot: int
    filename: str
    n_saved: int | None = None
    n_written: int | None = None
    n_restored: int | None = None
    n_read: int | None = None
    timings: SlotTimings = SlotTimings()


class Template(BaseModel):
    prompt: str


class Tokens(BaseModel):
    tokens: list[int]


class SlotCallFailed(Exception):
    """The server refused or did not answer; the message says which."""


def _failed(response: httpx.Response) -> SlotCallFailed:
    return SlotCallFailed(f"HTTP {response.status_code}: {response.text[:300]}")


async def slots(client: httpx.AsyncClient, url: str) -> list[SlotView]:
    response = await client.get(f"{url}/slots")
    if response.status_code != 200:
        raise _failed(response)
    try:
        return [SlotView.model_validate(s) for s in response.json()]
    except (ValueError, ValidationError, TypeError) as exc:
        raise SlotCallFailed(f"/slots did not read as slots: {exc}") from None


async def slot_action(client: httpx.AsyncClient, url: str, slot: int, action: str, filename: str,
                      timeout_s: float) -> SlotAnswer:
    try:
        response = await client.post(f"{url}/slots/{slot}", params={"action": action}, json={"filename": filename},
                                     timeout=timeout_s)
    except httpx.TimeoutException:
        raise SlotCallFailed(f"no answer within {timeout_s:.1f} s") from None
    except httpx.HTTPError as exc:
        raise SlotCallFailed(str(exc) or type(exc).__name__) from None
    if response.status_code != 200:
        raise _failed(response)
    try:
        return SlotAnswer.model_validate_json(response.content)
    except ValidationError as exc:
        raise SlotCallFailed(f"the answer did not read as a slot action's: {exc}") from None


async def prompt_tokens(client: httpx.AsyncClient, url: str, target: str, body: bytes) -> list[int] | None:
    """The tokens llama-server will see for this request (a chat or a text completion); None for
    another endpoint, a prompt that is not one string (a batch, pre-tokenized), or a refusal."""
    path = target.split("?", 1)[0].rstrip("/")
    try:
        if path.endswith("/chat/completions"):
            response = await client.post(f"{url}/apply-template", content=body,
                                         headers={"content-type": "application/json"})
            if response.status_code != 200:
                return None
            prompt = Template.model_validate_json(response.content).prompt
        elif path.endswith("/completions") or path.endswith("/completion"):
            parsed = json.loads(body)
            prompt = parsed.get("prompt") if isinstance(parsed, dict) else None
            if not isinstance(prompt, str):
                return None
        else:
            return None
        response = await client.post(f"{url}/tokenize",
                                     json={"content": prompt, "add_special": True, "parse_special": True})
        if response.status_code != 200:
            return None
        return Tokens.model_validate_json(response.content).tokens
    except (httpx.HTTPError, ValidationError, ValueError):
        return None


async def prompt_speed(client: httpx.AsyncClient, url: str) -> float | None:
    """Prompt tokens per second over the server's life so far (its ``/metrics`` counters); None if unknown."""
    try:
        response = await client.get(f"{url}/metrics")
        if response.status_code != 200:
            return None
        values = {sample.name: sample.value for family in text_string_to_metric_families(response.text)
                  for sample in family.samples}
    except (httpx.HTTPError, ValueError):
        return None
    tokens, seconds = values.get("llamacpp:prompt_tokens_total"), values.get("llamacpp:prompt_seconds_total")
    if not tokens or not seconds:
        return None
    return tokens / seconds
