"""The FastAPI application: wiring only; the decisions live in routing/relay."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import httpx

from common.errors import ApiError, install_error_handlers

from . import __version__
from .api import activity as api_activity, admin as api_admin, models as api_models
from .api import ollama_models as api_ollama, status as api_status
from .context import GatewayContext
from .cors import install_cors
from .proxy.dialect import Surface, dialect_for
from .api import anthropic, ollama, openai
from .api.console import serve_console
from .api.docs import serve_docs
from .activity import ActivityLog
from .gpu import NvmlReader
from .orchestrator_link import orchestrator_transport
from .kvcache.files import CacheDir
from .kvcache.keeper import KvKeeper
from .metrics import GatewayMetrics
from .scheduling.lifecycle import Lifecycle
from .scheduling.inputs import Defaults
from .routes.orchestrated import OrchestratorRegistry
from .routes.registry import ModelRegistry, StaticRegistry
from .proxy.relay import SERVER_SEND_KEY
from .settings import GatewaySettings

DESCRIPTION = """
One OpenAI-compatible address for every local model. Requests are routed by their
`model` field (names and aliases) to that model's llama-server; answers, streams
included, come back byte for byte.

* **OpenAI**: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, `/v1/models`
* **Anthropic**: `/v1/messages`
* **Passthrough**: `/upstream/{model}/{path}` reaches one model's server directly
* **Gateway**: `/health`, `/status`, `/gpu`, `/metrics`, the web console at `/ui`
* **Ollama**: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/ps`, `/api/show`, `/api/version`
* **Providers**: other OpenAI-compatible servers' models (`config/upstreams.yaml` `providers`), as `provider:model`
* **Admin** (admin token): `/admin/models` add, remove, restart, logs, load, unload; `/admin/unload`; `/admin/reconcile`

Errors use OpenAI's format: `{"error": {"message", "type", "param", "code"}}`.
"""


# The API surfaces a client may speak, one line each: a dialect, its routes, and the paths whose
# errors it answers (the rest answer in OpenAI's shape).
SURFACES = (
    Surface(openai.PLAIN, (openai.router,)),
    Surface(anthropic.DIALECT, (anthropic.router,)),
    Surface(ollama.DIALECT, (ollama.router, api_ollama.router), prefix="/api/"),
)


class GatewayApp(FastAPI):
    async def __call__(self, scope, receive, send) -> None:
        # Keep the server's own `send` within reach of the relay's fast path,
        # before Starlette's middleware wraps it (see relay.pipe_direct).
        scope[SERVER_SEND_KEY] = send
        await super().__call__(scope, receive, send)


# Idle connections to the orchestrator are dropped before uvicorn drops them (after 5 s): a
# request sent on one it is closing fails with "server disconnected". A stop that failed so was
# taken for done, and the next model started beside a server still running.
ORCHESTRATOR_LIMITS = httpx.Limits(keepalive_expiry=2.0)


def defaults_from(settings: GatewaySettings) -> Defaults:
    return Defaults(ttl_s=settings.default_ttl_s, queue=settings.queue_size, queue_timeout_s=settings.queue_timeout_s,
                    min_residency_s=settings.min_residency_s, max_wait_s=settings.max_wait_s,
                    memory_budget=int(settings.memory_budget) if settings.memory_budget else None,
                    vram_reserve=int(settings.vram_reserve), state_dir=settings.state_dir)


def kv_keeper(settings: GatewaySettings, metrics: GatewayMetrics) -> KvKeeper | None:
    """The keeper of conversations' KV caches, when a cache directory is set and saving is on."""
    if settings.kv_cache_dir is None or settings.kv_cache_max_mb <= 0:
        return None
    files = CacheDir(settings.kv_cache_dir, max_bytes=settings.kv_cache_max_mb * 2**20,
                     min_free_bytes=settings.kv_cache_min_free_mb * 2**20)
    return KvKeeper(files, metrics, save_budget_s=settings.kv_save_budget_s)


def default_registry(settings: GatewaySettings) -> ModelRegistry:
    static = StaticRegistry(settings.upstreams_file, settings.health_interval_s)
    if settings.orchestrator_url:
        return OrchestratorRegistry(settings.orchestrator_url, settings.admin_token, static=static,
                                    socket=settings.orchestrator_socket)
    return static


def create_app(
    settings: GatewaySettings | None = None,
    registry: ModelRegistry | None = None,
    gpu: NvmlReader | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    registry = registry or default_registry(settings)
    context = GatewayContext(settings=settings, registry=registry, gpu=gpu or NvmlReader(),
                             activity=ActivityLog(settings.activity_size))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Admin calls can take minutes (a model loading); log follows last as long as the client stays.
        app.state.admin_client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0), limits=ORCHESTRATOR_LIMITS,
            transport=orchestrator_transport(settings.orchestrator_socket, ORCHESTRATOR_LIMITS))
        if isinstance(registry, OrchestratorRegistry):
            context.kv_keeper = kv_keeper(settings, context.metrics)
            context.lifecycle = lifecycle = Lifecycle(
                httpx.AsyncClient(headers={"authorization": f"Bearer {settings.admin_token}"},
                                  timeout=httpx.Timeout(None, connect=5.0), limits=ORCHESTRATOR_LIMITS,
                                  transport=orchestrator_transport(settings.orchestrator_socket, ORCHESTRATOR_LIMITS)),
                settings.orchestrator_url, defaults_from(settings), context.gpu, context.metrics,
                on_status=registry.apply_status, keeper=context.kv_keeper)
            registry.on_listing = lifecycle.on_listing
            await lifecycle.start()
        await registry.start()
        try:
            yield
        finally:
            if context.lifecycle is not None:
                await context.lifecycle.stop()
                await context.lifecycle.client.aclose()
            if context.kv_keeper is not None:
                await context.kv_keeper.close()
            await app.state.admin_client.aclose()
            await registry.stop()

    app = GatewayApp(title="llamadock gateway", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    serve_docs(app)  # /docs and /redoc with their assets served from here: they work offline
    serve_console(app)  # /ui: the web console
    app.state.gateway = context
    app.include_router(api_status.router)
    for surface in SURFACES:
        for router in surface.routers:
            app.include_router(router)
    app.include_router(api_models.router)  # after the surfaces: its /v1/{path} would match their routes
    app.include_router(api_admin.router)
    app.include_router(api_activity.router)

    def _answer(request: Request, error: ApiError):
        return dialect_for(SURFACES, request.url.path, default=openai.PLAIN).error_response(error)

    install_error_handlers(app, service="gateway", validation_prefix="Invalid request",
                           validation_code="invalid_request", render=_answer)
    install_cors(app, settings.cors_origins)  # preflights answered before any route (or key check)

    return app
