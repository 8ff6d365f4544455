"""Overload: 1,000 concurrent streaming requests at one single-slot model. Every one is
answered (200 with a whole stream, or 429 with Retry-After), none hangs, no slot leaks,
and the gateway's memory stays bounded."""

from __future__ import annotations

import asyncio
import resource
import threading
import time

import httpx
import pytest

from support.faults import container_pid, rss_bytes
from support.stack import require_docker, running_stack
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

CLIENTS = 1000
TOTAL_LIMIT_S = 180
RSS_LIMIT = 150 * 2**20


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    with running_stack(tmp_path_factory.mktemp("overload"), tiny_models["tiny-a"], as_file="tiny.gguf",
                       add={"name": "tiny", "model": "tiny.gguf"}) as stack:
        yield stack


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, rss_bytes(pid), threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):  # sampling rate, not a wait for anything
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._done.set()
        self.join(5)
        return self.peak


async def flood(url: str) -> list:
    body = {"model": "tiny", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(TOTAL_LIMIT_S, connect=60)) as client:
        async def one():
            async with client.stream("POST", url, json=body) as reply:
                text = (await reply.aread()).decode("utf-8", "replace")
                return reply.status_code, reply.headers.get("retry-after"), text

        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(CLIENTS)), return_exceptions=True),
                                      TOTAL_LIMIT_S)


def test_a_thousand_concurrent_streams_are_all_answered(stack, fault_report):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    pid = container_pid(f"{stack.project}-gateway-1")
    rss_before = rss_bytes(pid)
    sampler = RssSampler(pid)
    sampler.start()
    started = time.monotonic()
    try:
        results = asyncio.run(flood(stack.url + "/v1/chat/completions"))
    finally:
        elapsed = time.monotonic() - started
        peak = sampler.stop()

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], {type(f).__name__ for f in failures}
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(served) + len(refused) == CLIENTS, sorted({r[0] for r in results})
    assert all("data: [DONE]" in text for _, _, text in served)
    assert all(retry and '"rate_limit_exceeded"' in text for _, retry, text in refused)
    assert served, "not one request was served"
    # Nothing leaked: the model's slot and queue are empty again, and it still answers.
    def idle() -> bool:
        model = httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]["models"]["tiny"]
        return model["in_flight"] == 0 and model["queued"] == 0
    wait_until(idle, 10, "the model's slot and queue to be empty")
    assert httpx.post(stack.url + "/v1/chat/completions", timeout=60, json={
        "model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    rss_after = rss_bytes(pid)
    assert peak < RSS_LIMIT, f"gateway RSS peaked at {peak / 2**20:.0f} MiB"
    fault_report(f"overload: {CLIENTS} concurrent streams, 1 slot",
                 f"{len(served)} x 200 (whole streams), {len(refused)} x 429 with Retry-After, 0 errors, 0 hung",
                 None, "nothing (slot and queue empty afterwards)", total_s=round(elapsed, 2),
                 gateway_rss_mib={"before": round(rss_before / 2**20, 1), "peak": round(peak / 2**20, 1),
                                  "after": round(rss_after / 2**20, 1)})
