"""The agent's HTTP API: ``GET /facts`` (contract/nodes.py ``NodeFacts``) and ``GET /health``.
Served on the overlay only (the service publishes no port); the orchestrator is its one reader."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from contract.nodes import NodeFacts

from .facts import CachedFacts


def agent_app(facts: CachedFacts) -> FastAPI:
    app = FastAPI(title="llamadock node agent", docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/facts", response_model=NodeFacts)
    async def read_facts() -> NodeFacts:
        # NVML calls into the driver and the models directory may be a network share: off the loop.
        return await asyncio.to_thread(facts.get)

    return app
