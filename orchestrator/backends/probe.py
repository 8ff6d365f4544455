"""What the orchestrator asks a model's own server, whatever backend runs it: is it up
(``/health``), and does it compute (a one-token ``/completion``, an upgrade's check)."""

from __future__ import annotations

import httpx

from .runtime import Instance


def probe_client() -> httpx.AsyncClient:
    """Short timeouts and no kept connections: a probe must never wait on a dead server's socket."""
    return httpx.AsyncClient(timeout=httpx.Timeout(1.0), limits=httpx.Limits(max_keepalive_connections=0))


async def answers_health(client: httpx.AsyncClient, instance: Instance) -> bool:
    """Whether its server answers /health with 200 now (False when it cannot be reached)."""
    if not instance.probe_url:
        return False
    try:
        return (await client.get(f"{instance.probe_url}/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def completes_one_token(client: httpx.AsyncClient, instance: Instance) -> str | None:
    """One token from llama-server's own /completion: the model loaded and the image computes.
    None when it does, else why not."""
    if not instance.probe_url:
        return "it has no address"
    try:
        answer = await client.post(f"{instance.probe_url}/completion", json={"prompt": "Hi", "n_predict": 1},
                                   timeout=60.0)
    except httpx.HTTPError as exc:
        return f"a one-token completion failed: {exc!r}"
    return None if answer.status_code == 200 else f"a one-token completion answered {answer.status_code}"
