"""One request as the gateway saw it: the activity record. The gateway logs one line of it per
request and keeps the latest in memory for ``GET /admin/activity`` (a console reads it)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ActivityRecord(BaseModel):
    at: datetime = Field(description="When the request arrived (UTC).")
    model: str = Field(description="The model that served it (the route's name, not an alias).")
    dialect: str = Field(description="The API it spoke: openai, anthropic, ollama.")
    endpoint: str = Field(description="e.g. chat/completions, messages, upstream.")
    stream: bool = False
    status: int = Field(description="HTTP status sent; 499: the client went away first.")
    error: str | None = Field(None, description="The kind of failure, e.g. scheduler_refused, upstream_timeout.")
    queue_wait_s: float = Field(0.0, description="Waiting for a free slot (its model ready, every slot busy).")
    load_wait_s: float = Field(0.0, description="Waiting for its model to start (or for room to be made).")
    ttft_s: float | None = Field(None, description="Streams: arrival to the model's first event.")
    tokens_in: int | None = Field(None, description="Prompt tokens, as the model's server counted them.")
    tokens_out: int | None = Field(None, description="Generated tokens, as the model's server counted them.")
    tokens_per_s: float | None = Field(None, description="Generation speed (the server's own measure when sent).")
    duration_s: float = Field(description="Arrival to the last byte.")
    client_disconnected: bool = False
    kv_cache_restored: bool = Field(False, description="Served from a KV cache restored from disk.")

    def line(self) -> str:
        """The one INFO line: every field a person scans for, in a fixed order."""
        def opt(value: float | int | None, unit: str = "", digits: int = 3) -> str:
            if value is None:
                return "-"
            return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"
        parts = [f"model={self.model}", f"dialect={self.dialect}", f"endpoint={self.endpoint}",
                 f"status={self.status}", f"stream={'yes' if self.stream else 'no'}",
                 f"queue={opt(self.queue_wait_s, 's')}", f"load={opt(self.load_wait_s, 's')}",
                 f"ttft={opt(self.ttft_s, 's')}", f"in={opt(self.tokens_in)}", f"out={opt(self.tokens_out)}",
                 f"tok/s={opt(self.tokens_per_s, digits=1)}", f"took={opt(self.duration_s, 's')}"]
        if self.client_disconnected:
            parts.append("client=gone")
        if self.error:
            parts.append(f"error={self.error}")
        if self.kv_cache_restored:
            parts.append("kv=restored")
        return " ".join(parts)


class ActivityList(BaseModel):
    """``GET /admin/activity``: newest first."""
    records: list[ActivityRecord] = Field(default_factory=list)
    kept: int = Field(0, description="How many records the gateway keeps (LLAMADOCK_ACTIVITY_SIZE).")
