"""Ollama's API (/api/chat, /api/generate, /api/embed, /api/embeddings), for apps that speak
Ollama: the same models, routing, scheduling and exchange as /v1. A request is translated to the
/v1 call llama-server takes, and its answer (JSON, or SSE chunks) back to Ollama's (one JSON, or
NDJSON lines) by gateway/api/ollama_translation.py's pure translation. Errors: ``{"error": "..."}``, in a
stream as one such line. A waiting client is told nothing (Ollama has no way to say it).
The model list in Ollama's shapes (/api/tags, /api/ps, /api/show) is gateway/api/ollama_models.py.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from common.errors import ApiError
from contract.listing import ModelState

from ..scheduling import control
from .. import errors
from . import ollama_translation as translation
from ..proxy import upstream
from ..auth import require_api_key
from ..context import GatewayContext
from ..proxy.exchange import context, incoming, known_name, read_body, relay, resolve
from ..proxy.dialect import Asked, Client, UpstreamCall

NDJSON = b"application/x-ndjson"
_JSON_CALL = [(b"content-type", b"application/json")]


def parsed(raw: bytes) -> dict:
    """The body as a JSON object, or a 400 saying why not."""
    try:
        body = json.loads(raw) if raw else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    return body


def checked(call, *args):
    """A translation, its OllamaRequestError as a 400."""
    try:
        return call(*args)
    except translation.OllamaRequestError as exc:
        raise errors.bad_request(str(exc)) from None


def line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def error_response(error: ApiError) -> JSONResponse:
    """Ollama's error shape: {"error": "message"}, with the same status and headers."""
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)


class Ollama:
    """One of Ollama's endpoints: ``kind`` is "chat", "generate", "embed" or "embeddings" (the older,
    one-vector embed)."""

    name = "ollama"
    stream_type = NDJSON

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def read(self, raw: bytes, request: Request) -> Asked:
        body = parsed(raw)
        return Asked(model=checked(translation.model_of, body),
                     stream=self.kind in ("chat", "generate") and translation.stream_of(body),
                     keep_alive=checked(translation.parse_keep_alive, body.get("keep_alive")), body=body)

    def candidates(self, model: str) -> list[str]:
        return translation.candidates(model)  # "qwen3:latest" finds "qwen3"

    def loads_only(self, asked: Asked) -> bool:
        """An empty generate or chat: it only loads the model (or unloads it, keep_alive 0)."""
        return self.kind in ("chat", "generate") and translation.is_load_only(self.kind, asked.body)

    def request(self, asked: Asked, model: str, incoming: UpstreamCall) -> UpstreamCall:
        body = asked.body
        if self.kind == "chat":
            endpoint, wanted = "chat/completions", checked(translation.chat_request, body, model)
        elif self.kind == "generate":
            endpoint, wanted = checked(translation.generate_request, body, model)
        else:
            endpoint, wanted = "embeddings", checked(translation.embed_request, body, model, self.kind == "embeddings")
        return UpstreamCall("POST", f"/v1/{endpoint}", _JSON_CALL, json.dumps(wanted).encode())

    async def answer(self, asked: Asked, model: str, response: upstream.UpstreamResponse, client: Client) -> None:
        load_ns = int((client.admitted_at - client.started) * 1e9)  # the wait for the model (start, queue)
        if response.status != 200:
            try:
                text = await response.read()
            except upstream.UpstreamError:
                text = b""
            status = response.status if 400 <= response.status < 600 else 502
            return await client.fail(ApiError(status, f"Model '{model}': {translation.upstream_error(response.status, text)}"),
                                     "upstream_error")
        if not asked.stream:
            return await self._whole(model, response, client, load_ns)
        result = translation.Answer(self.kind, model, started=client.started, load_ns=load_ns)
        decoder = translation.SseDecoder()
        await client.start(200, [(b"content-type", NDJSON)])
        try:
            while (piece := await response.next_piece()) is not None:
                client.count(piece)
                lines = []
                for event in decoder.feed(piece):
                    if "error" in event and not event.get("choices"):
                        error = event["error"]
                        message = error.get("message") if isinstance(error, dict) else str(error)
                        if lines:
                            await client.send(b"".join(lines))
                        return await client.fail(ApiError(502, message), "upstream_error")
                    lines.extend(line(out) for out in result.take(event))
                if lines:
                    await client.send(b"".join(lines))  # what arrived together leaves together
        except upstream.UpstreamError as exc:
            return await client.fail(errors.upstream_broken(model, str(exc)), "upstream_broken")
        await client.send(line(result.last()), more=False)

    async def _whole(self, model: str, response: upstream.UpstreamResponse, client: Client, load_ns: int) -> None:
        try:
            raw = await response.read()
        except upstream.UpstreamError as exc:
            return await client.fail(errors.upstream_broken(model, str(exc)), "upstream_broken")
        client.count(raw)  # its token counts, for the activity record
        try:
            answer = json.loads(raw)
        except ValueError:
            return await client.fail(errors.upstream_broken(model, "its answer is not JSON"), "upstream_broken")
        if self.kind in ("embed", "embeddings"):
            return await client.respond(JSONResponse(translation.embed_answer(
                model, answer, client.started, load_ns, legacy=self.kind == "embeddings")))
        result = translation.Answer(self.kind, model, started=client.started, load_ns=load_ns)
        result.take(answer)
        await client.respond(JSONResponse(result.last(whole=True)))

    def error_response(self, error: ApiError) -> JSONResponse:
        return error_response(error)

    def stream_error(self, error: ApiError) -> bytes:
        return line({"error": error.message})

    def tells_progress(self, asked: Asked) -> bool:
        return False

    def progress_event(self, asked: Asked, report, waited_s: float, model: str, stream_id: str) -> bytes:
        return b""


CHAT, GENERATE, EMBED, EMBEDDINGS = Ollama("chat"), Ollama("generate"), Ollama("embed"), Ollama("embeddings")
DIALECT = CHAT  # the one that answers every error under /api/ (they all answer the same)

router = APIRouter(prefix="/api", tags=["Ollama"], dependencies=[Depends(require_api_key)])


def _doc(summary: str) -> dict:
    return {"summary": summary, "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["model"]}}}}}}


async def _serve(request: Request, dialect: Ollama):
    started = time.perf_counter()
    ctx = context(request)
    raw = await read_body(request, ctx.settings.max_body_bytes)
    asked = dialect.read(raw, request)
    if dialect.loads_only(asked):
        return await _load_only(ctx, dialect.kind, known_name(ctx, dialect.candidates(asked.model)), asked.keep_alive)
    return await relay(ctx, dialect, asked, incoming(request, request.url.path, raw), f"api/{dialect.kind}", started)


def _scheduled(ctx: GatewayContext, name: str) -> bool:
    return ctx.lifecycle is not None and ctx.lifecycle.knows(name)


async def _load_only(ctx: GatewayContext, kind: str, name: str, keep: float | None) -> JSONResponse:
    """An empty generate / chat: load the model (and apply keep_alive), or unload it (keep_alive 0)."""
    route = resolve(ctx, name)
    if keep == 0:
        if _scheduled(ctx, route.name):
            control.keep_alive(ctx.lifecycle, route.name, 0)  # stops it now if idle, else after its requests
        reason = "unload"
    else:
        if _scheduled(ctx, route.name):
            await control.load(ctx.lifecycle, route.name)
            if keep is not None:
                control.keep_alive(ctx.lifecycle, route.name, keep)
        elif route.state is not ModelState.READY:
            raise errors.model_not_ready(route.name, route.state.value, route.reason, 5)
        reason = "load"
    out: dict = {"model": name, "created_at": translation.now_iso()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return JSONResponse({**out, "done": True, "done_reason": reason})


@router.post("/chat", **_doc("Chat (Ollama): streamed NDJSON unless `stream` is false"))
async def chat(request: Request):
    return await _serve(request, CHAT)


@router.post("/generate", **_doc("Generate (Ollama); an empty prompt only loads, or with keep_alive 0 unloads"))
async def generate(request: Request):
    return await _serve(request, GENERATE)


@router.post("/embed", **_doc("Embeddings (Ollama); the model's server needs --embeddings"))
async def embed(request: Request):
    return await _serve(request, EMBED)


@router.post("/embeddings", **_doc("Embeddings, Ollama's older endpoint (`prompt`, one vector)"))
async def embeddings(request: Request):
    return await _serve(request, EMBEDDINGS)
