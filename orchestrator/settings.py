"""Orchestrator configuration, from the environment (prefix ``LLAMADOCK_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The official llama.cpp server images, pinned to the build that matches the
# llama.cpp tree the tests run (llama-cpp-python 0.3.36's vendored copy).
OFFICIAL_CPU_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-b11312"
OFFICIAL_GPU_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-cuda-b11312"


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLAMADOCK_", extra="ignore", populate_by_name=True)

    orchestrator_host: str = Field("127.0.0.1", description="Address the orchestrator's API listens on.")
    orchestrator_port: int = Field(8081, description="Its TCP port. In the stack it listens on its own container's "
                                   "loopback only (for Docker's healthcheck); the gateway uses the socket.")
    orchestrator_socket: Path | None = Field(None, description="Also serve on this Unix socket (a volume the gateway "
                                             "mounts too). Unset: TCP only.")
    admin_token: str = Field("", description="Bearer token every call but /health needs. Empty: the API refuses all.")
    # LLAMADOCK_BACKEND is the documented name; LLAMADOCK_RUNTIME, the seam's first name, still reads.
    runtime: str = Field("engine", validation_alias=AliasChoices("LLAMADOCK_BACKEND", "LLAMADOCK_RUNTIME", "runtime"),
                         description="Where models run: a backend named in orchestrator/backends (engine: the Docker "
                         "engine on this box; swarm: services of a Docker Swarm).")
    gpu: Literal["auto", "nvidia", "none"] = Field("auto", description="GPU mode; auto asks the Docker daemon.")
    catalog_file: Path = Field(Path("config/models.yaml"), description="Declared models (persisted on add/remove).")
    models_dir: Path = Field(Path("models"), description="models/ as this process sees it (for checks).")
    # Where the stack is, as the Docker daemon sees it. Inside the stack these are read
    # from the orchestrator's own container; set them to run the orchestrator elsewhere.
    project: str | None = Field(None, description="Compose project name (labels, container names).")
    network: str | None = Field(None, description="Docker network the model containers join.")
    models_host_dir: str | None = Field(None, description="Host path of models/ (bind-mounted into models).")
    kv_cache_dir: Path | None = Field(None, description="The KV cache root as this process sees it (one directory "
                                      "per model is made there before its server starts); unset: models_dir/.cache/kv.")
    kv_cache_host_dir: str | None = Field(None, description="Host path of the KV cache root (bind-mounted into "
                                          "models); inside the stack, read from the orchestrator's /kv mount.")
    llama_image_cpu: str = Field(OFFICIAL_CPU_IMAGE, description="llama-server image without a GPU.")
    llama_image_gpu: str = Field(OFFICIAL_GPU_IMAGE, description="llama-server image with an NVIDIA GPU.")
    model_user: str | None = Field(None, description="uid:gid the model servers run as (owner of downloads).")
    load_timeout_s: float = Field(900.0, description="Longest wait for a model file to load.")
    download_timeout_s: float = Field(7200.0, description="Longest wait for a Hugging Face model (download + load).")
    stop_grace_s: float = Field(10.0, description="SIGTERM, then this long, then SIGKILL.")
    model_url_by: Literal["name", "ip"] = Field("name", description="Gateway reaches models by container name or IP.")
    reconcile_on_start: bool = Field(True, description="Bring containers in line with the catalog at start.")
    model_logs: Literal["events", "all", "off"] = Field(
        "events", description="What of the model containers' output is copied into this service's log (so "
        "`docker compose logs -f` shows it): events (each start until the server listens, then warnings, errors "
        "and its end; not the lines per request), all, or off. The whole log stays in each model's container.")
    swarm_network: str = Field("llamadock", description="Swarm backend: the attachable overlay network model "
                               "services join (made by `make swarm-init`).")
    app_image: str | None = Field(None, description="Swarm backend: the image of the node agent (the app image); "
                                  "inside the stack, the orchestrator's own container's image.")
    agent_port: int = Field(8089, description="Swarm backend: the port each node's agent serves its facts on "
                            "(on the overlay only).")
    log_level: str = "info"
    log_format: Literal["plain", "json"] = Field("plain", description="json: one JSON object per log line.")

    @field_validator("runtime", "llama_image_cpu", "llama_image_gpu", "project", "network", "models_host_dir",
                     "model_user", "orchestrator_socket", "app_image", "kv_cache_dir", "kv_cache_host_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value, info):
        # compose passes `${VAR:-}` as an empty string when .env leaves it out: use the default.
        if value == "":
            return cls.model_fields[info.field_name].default
        return value

    @property
    def kv_root(self) -> Path:
        """Where this process makes the models' KV cache directories."""
        return self.kv_cache_dir or self.models_dir / ".cache" / "kv"
