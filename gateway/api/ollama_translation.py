"""Ollama's API in terms of llama-server's OpenAI-compatible one: pure translation, no I/O.

A request to /api/chat, /api/generate or /api/embed becomes a body for /v1/chat/completions,
/v1/completions or /v1/embeddings; the answer (JSON, or SSE chunks) becomes Ollama's
(one JSON object, or NDJSON lines). gateway/api/ollama_models.py does the exchange around it.

Shapes follow Ollama's docs/api.md: durations in nanoseconds, `done_reason` "stop" or
"length", counts from llama-server's `timings` (or `usage`) where it sends them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from contract.spec import ModelSpec

# Ollama option -> OpenAI / llama-server body field. Others (num_ctx, num_gpu, …) are the
# model's settings here, fixed in the catalog: ignored, as Ollama ignores unknown options.
OPTIONS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
    "stop": "stop", "num_predict": "max_tokens", "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "typical_p": "typical_p", "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta",
}
FOREVER_S = -1.0

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class OllamaRequestError(ValueError):
    """The request is not one Ollama would take: a 400 with this message."""


def parse_keep_alive(value: object) -> float | None:
    """Seconds from Ollama's ``keep_alive``: a number of seconds, or a Go duration ("5m", "1h30m",
    "-1"); None when absent. Negative means forever (-1.0); 0 unload after the request."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OllamaRequestError("keep_alive must be a duration like \"5m\" or a number of seconds.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)  # "300", "-1": seconds, as Ollama reads a bare number
        except ValueError:
            parts = _DURATION.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise OllamaRequestError(f"keep_alive: '{value}' is not a duration (like \"5m\", \"1h\", "
                                         "\"30s\", \"-1\").") from None
            seconds = sign * sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        raise OllamaRequestError("keep_alive must be a duration like \"5m\" or a number of seconds.")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise OllamaRequestError("keep_alive must be a finite duration.")
    return FOREVER_S if seconds < 0 else seconds


def model_of(body: dict) -> str:
    name = body.get("model", body.get("name"))
    if not isinstance(name, str) or not name.strip():
        raise OllamaRequestError("model is required")
    return name


def candidates(name: str) -> list[str]:
    """Names to look a model up by: as given, then without Ollama's default ":latest" tag."""
    return [name, name[: -len(":latest")]] if name.endswith(":latest") else [name]


def _options(body: dict) -> dict:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise OllamaRequestError("options must be an object.")
    out = {OPTIONS[k]: v for k, v in options.items() if k in OPTIONS and v is not None}
    if out.get("max_tokens") is not None and isinstance(out["max_tokens"], (int, float)) and out["max_tokens"] < 0:
        out.pop("max_tokens")  # -1 (or -2): as long as it takes, which is llama-server's default
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    elif fmt not in (None, ""):
        raise OllamaRequestError("format must be \"json\" or a JSON schema.")
    return out


def _content(text: object, images: object) -> object:
    if text is not None and not isinstance(text, str):
        raise OllamaRequestError("message content must be a string.")
    if not images:
        return text or ""
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise OllamaRequestError("images must be a list of base64 strings.")
    return [{"type": "text", "text": text or ""}] + [
        {"type": "image_url", "image_url": {"url": i if i.startswith("data:") else f"data:image/png;base64,{i}"}}
        for i in images]


def _message(m: object) -> dict:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise OllamaRequestError("each message must be an object with a role.")
    out: dict = {"role": m["role"], "content": _content(m.get("content"), m.get("images"))}
    calls = m.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise OllamaRequestError("tool_calls must be a list.")
        out["tool_calls"] = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": (c.get("function") or {}).get("name", ""),
                          "arguments": json.dumps((c.get("function") or {}).get("arguments") or {})}}
            for i, c in enumerate(calls) if isinstance(c, dict)]
    if m.get("tool_name"):
        out["name"] = m["tool_name"]
    return out


def chat_request(body: dict, model: str) -> dict:
    """/api/chat -> /v1/chat/completions."""
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise OllamaRequestError("messages must be a list.")
    out = {"model": model, "messages": [_message(m) for m in messages], "stream": stream_of(body),
           **_options(body)}
    if body.get("tools"):
        if not isinstance(body["tools"], list):
            raise OllamaRequestError("tools must be a list.")
        out["tools"] = body["tools"]
    return out


def generate_request(body: dict, model: str) -> tuple[str, dict]:
    """/api/generate -> (endpoint, body): the chat template applied (/v1/chat/completions, as
    Ollama does), or the prompt as it is with ``raw`` (/v1/completions)."""
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise OllamaRequestError("prompt must be a string.")
    if body.get("raw"):
        return "completions", {"model": model, "prompt": prompt, "stream": stream_of(body), **_options(body)}
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": _content(body["system"], None)})
    messages.append({"role": "user", "content": _content(prompt, body.get("images"))})
    return "chat/completions", {"model": model, "messages": messages, "stream": stream_of(body), **_options(body)}


def embed_request(body: dict, model: str, legacy: bool = False) -> dict:
    """/api/embed (``input``: a string or a list) or /api/embeddings (``prompt``) -> /v1/embeddings."""
    given = body.get("prompt") if legacy else body.get("input")
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not given or not all(isinstance(i, str) for i in given):
        raise OllamaRequestError("prompt must be a string." if legacy
                                 else "input must be a string or a non-empty list of strings.")
    return {"model": model, "input": given}


def stream_of(body: dict) -> bool:
    return body.get("stream") is not False  # Ollama streams unless told not to


def is_load_only(kind: str, body: dict) -> bool:
    """An empty /api/generate (no prompt) or /api/chat (no messages) only loads or unloads the model."""
    if kind == "generate":
        return not body.get("prompt") and not body.get("images")
    return kind == "chat" and not body.get("messages")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(ms: object) -> int | None:
    return int(float(ms) * 1e6) if isinstance(ms, (int, float)) else None


@dataclass
class Answer:
    """What a chat or generate answer has said so far, from the OpenAI chunks or the one JSON."""

    kind: str  # "chat" or "generate"
    model: str
    started: float = field(default_factory=time.perf_counter)  # when the request arrived
    load_ns: int = 0  # time spent waiting for the model (start, queue)
    content: str = ""
    thinking: str = ""
    finish: str | None = None
    tool_calls: dict[int, dict] = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def take(self, chunk: dict) -> list[dict]:
        """One OpenAI chunk (or whole answer) in; the Ollama stream lines it makes out."""
        self._counts(chunk)
        lines = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") if "delta" in choice or "message" in choice else choice.get("text")
            thought = delta.get("reasoning_content")
            for call in delta.get("tool_calls") or []:
                slot = self.tool_calls.setdefault(call.get("index", len(self.tool_calls)), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
            if text or thought:
                self.content += text or ""
                self.thinking += thought or ""
                lines.append(self._line(text or "", thought or "", done=False))
        return lines

    def _counts(self, chunk: dict) -> None:
        timings, usage = chunk.get("timings") or {}, chunk.get("usage") or {}
        if timings:
            self.counts.update(prompt_eval_count=timings.get("prompt_n"), eval_count=timings.get("predicted_n"),
                               prompt_eval_duration=_ns(timings.get("prompt_ms")),
                               eval_duration=_ns(timings.get("predicted_ms")))
        if usage:
            self.counts.setdefault("prompt_eval_count", usage.get("prompt_tokens"))
            self.counts.setdefault("eval_count", usage.get("completion_tokens"))
        self.counts = {k: v for k, v in self.counts.items() if v is not None}

    def _line(self, text: str, thought: str, done: bool) -> dict:
        line: dict = {"model": self.model, "created_at": now_iso()}
        if self.kind == "chat":
            message: dict = {"role": "assistant", "content": text}
            if thought:
                message["thinking"] = thought
            line["message"] = message
        else:
            line["response"] = text
            if thought:
                line["thinking"] = thought
        line["done"] = done
        return line

    def last(self, whole: bool = False) -> dict:
        """The closing line (``whole``: the one answer of a request that did not stream)."""
        line = self._line(self.content if whole else "", self.thinking if whole else "", done=True)
        if self.tool_calls and self.kind == "chat":
            line["message"]["tool_calls"] = [{"function": {"name": c["name"], "arguments": _arguments(c["arguments"])}}
                                             for _, c in sorted(self.tool_calls.items())]
        line["done_reason"] = "length" if self.finish == "length" else "stop"
        line["total_duration"] = int((time.perf_counter() - self.started) * 1e9)
        line["load_duration"] = self.load_ns
        line.update(self.counts)
        return line


def _arguments(text: str) -> dict:
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {"arguments": text}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


class SseDecoder:
    """OpenAI SSE bytes in, each event's JSON out ("[DONE]" and comments skipped)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, piece: bytes) -> list[dict]:
        self._buffer += piece.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n\n", 1)
            data = b"\n".join(line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:"))
            if not data or data.strip() == b"[DONE]":
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def embed_answer(model: str, answer: dict, started: float, load_ns: int, legacy: bool = False) -> dict:
    vectors = [d.get("embedding") for d in sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    out = {"model": model, "embeddings": vectors, "total_duration": int((time.perf_counter() - started) * 1e9),
           "load_duration": load_ns}
    tokens = (answer.get("usage") or {}).get("prompt_tokens")
    if tokens is not None:
        out["prompt_eval_count"] = tokens
    return out


def upstream_error(status: int, body: bytes) -> str:
    """The message of an error llama-server answered (OpenAI's format, or text)."""
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except ValueError:
        pass
    return body[:500].decode("utf-8", "replace") or f"HTTP {status}"


def details(source: str, architecture: str | None = None) -> dict:
    """Ollama's ``details`` from what the catalog knows of a model: its GGUF file or Hugging Face
    repo (the quantization is in the name), and its architecture when known."""
    quant = re.search(r"(?i)(I?Q\d[\w]*|F16|BF16|F32)(?=\.gguf$|$)", source.rsplit(":", 1)[-1] if ":" in source
                      else source)
    out = {"parent_model": "", "format": "gguf", "family": architecture or "",
           "families": None, "parameter_size": "", "quantization_level": quant.group(1).upper() if quant else ""}
    if out["family"]:
        out["families"] = [out["family"]]
    return out


def capabilities(spec: ModelSpec | None) -> list[str]:
    args = spec.args if spec else ()
    caps = ["embedding"] if "--embeddings" in args or "--embedding" in args else []
    return caps + ["completion"] + (["vision"] if spec and spec.mmproj else [])
