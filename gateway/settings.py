"""Gateway configuration, read from the environment (prefix ``LLAMADOCK_``) and ``.env``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing import Annotated


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLAMADOCK_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(8080, description="Port the gateway listens on.")
    upstreams_file: Path = Field(
        Path("config/upstreams.yaml"),
        description="Static model registry: model name -> llama-server URL and aliases.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Bearer keys required on /v1 and /upstream. Empty: no key needed.",
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, description="Largest request body accepted (413 beyond).")
    connect_timeout_s: float = Field(5.0, description="Connecting to a model's server (503 with Retry-After beyond).")
    first_byte_timeout_s: float = Field(
        600.0, description="Waiting for a model's response headers (504 beyond); prompts can be long."
    )
    health_interval_s: float = Field(1.0, description="How often the static registry probes /health.")
    fast_relay: bool = Field(
        True, description="Write streamed chunks straight to uvicorn's transport (off: one ASGI send per chunk)."
    )
    orchestrator_url: str | None = Field(
        None, description="The orchestrator's API (inside the stack: http://orchestrator, over the socket below). "
        "Unset: static file only."
    )
    orchestrator_socket: Path | None = Field(
        None, description="Reach the orchestrator over this Unix socket (a volume both services mount) instead of "
        "TCP: it then has no port at all. Unset: TCP to orchestrator_url.")
    admin_token: str = Field("", description="Bearer token for /admin/*. Empty: admin endpoints are off.")
    default_ttl_s: float = Field(0.0, ge=0, description="Stop a model after this long idle (a model's `ttl` wins); 0 = never.")
    queue_size: int = Field(32, ge=0, description="Requests that may wait per model beyond its slots (429 beyond).")
    queue_timeout_s: float = Field(300.0, gt=0, description="Longest wait in the queue, model start included (503 beyond).")
    min_residency_s: float = Field(10.0, ge=0, description="A started model is not swapped out for a rival before "
                                   "this long (a model's `min_residency` wins): batches, not a swap per request.")
    max_wait_s: float = Field(30.0, gt=0, description="A model waiting this long for memory goes next, even if "
                              "the loaded ones are busy or within their residency (no starvation).")
    memory_budget: ByteSize | None = Field(
        None, description="Memory the models may use when no GPU is visible (e.g. 24GiB); unset: no limit.")
    vram_reserve: ByteSize = Field(512 * 2**20, description="VRAM left free on each GPU for the driver and others.")
    state_dir: Path | None = Field(
        Path("logs"), description="Where the gateway keeps what it learns (the GPUs' CUDA overhead); must be writable.")
    kv_cache_dir: Path | None = Field(
        None, description="Where the model servers save their slots before a planned stop (one directory per "
        "model); restored when a conversation comes back. Unset: conversations are not kept across stops.")
    kv_cache_max_mb: int = Field(8192, ge=0, description="Cap on the saved slots, all models together (least "
                                 "recently used go first); 0 turns saving and restoring off.")
    kv_cache_min_free_mb: int = Field(1024, ge=0, description="Free disk left where the slots are saved: below "
                                      "it, nothing more is saved.")
    kv_save_budget_s: float = Field(5.0, gt=0, description="Longest a stop waits for its model's slots to be saved.")
    keepalive_s: float = Field(2.0, gt=0, description="While a streaming request waits for its model: SSE comment interval.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:*", "http://127.0.0.1:*"],
        description="Origins whose web pages may call the gateway (comma-separated; `*` any, `:*` any port); "
                    "empty: no cross-origin calls.")
    default_model: str | None = Field(
        None, description="The model that answers a request naming no model, or one nobody serves; "
                          "unset: those get 400 / 404.")
    log_level: str = "info"
    log_format: Literal["plain", "json"] = Field("plain", description="json: one JSON object per log line.")
    activity_size: int = Field(1000, ge=0, description="Requests kept in memory for GET /admin/activity (newest).")

    @field_validator("memory_budget", "orchestrator_url", "orchestrator_socket", "state_dir", "kv_cache_dir",
                     "default_model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # compose passes `${VAR:-}` as ""

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value
