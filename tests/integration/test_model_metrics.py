"""The gateway's /metrics over real llama-server processes: each model's own series with a
``model`` label, and a model that stops answering costs the scrape its timeout, no more."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.gateway import GatewayProcess, write_upstreams
from support.dashboard import names_missing_from

SCRAPE_TIMEOUT_S = 0.5  # gateway/model_metrics.py


def series(text: str) -> dict[tuple[str, str | None], float]:
    return {(s.name, s.labels.get("model")): s.value for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.fixture
def servers(spawn_llama):
    return {name: spawn_llama(name, extra_args=["--metrics"]) for name in ("tiny-a", "tiny-b")}


@pytest.fixture
def gateway(servers, tmp_path):
    path = write_upstreams(tmp_path / "upstreams.yaml", {name: {"url": s.url} for name, s in servers.items()})
    # Probed once at start, then not for a minute: a frozen server stays "ready" for the test.
    with GatewayProcess(path, env={"LLAMADOCK_HEALTH_INTERVAL_S": "60"}) as gw:
        yield gw


def test_each_running_model_has_its_llama_server_series_with_a_model_label(gateway, servers):
    for name in servers:
        reply = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
            "model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5 if name == "tiny-a" else 9})
        assert reply.status_code == 200
    scraped = httpx.get(gateway.url + "/metrics", timeout=10)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    got = series(scraped.text)
    for name, server in servers.items():
        own = series(httpx.get(server.url + "/metrics", timeout=5).text)
        assert own[("llamacpp:tokens_predicted_total", None)] == got[("llamacpp:tokens_predicted_total", name)]
        for key in [("llamacpp:requests_processing", name), ("llamacpp:requests_deferred", name),
                    ("llamacpp:predicted_tokens_seconds", name), ("llamacpp:prompt_tokens_total", name)]:
            assert key in got, key
    assert got[("llamacpp:tokens_predicted_total", "tiny-a")] != got[("llamacpp:tokens_predicted_total", "tiny-b")]
    # The gateway's own series are still there, and the dashboard queries only what is served.
    assert got[("llamadock_requests_total", "tiny-a")] >= 1
    assert names_missing_from(scraped.text) == set()


def test_a_model_that_does_not_answer_does_not_stall_the_scrape(gateway, servers):
    frozen = servers["tiny-b"]
    os.kill(frozen.pid, signal.SIGSTOP)  # its port still accepts connections; nothing answers
    try:
        started = time.monotonic()
        scraped = httpx.get(gateway.url + "/metrics", timeout=10)
        took = time.monotonic() - started
        assert scraped.status_code == 200
        got = series(scraped.text)
        assert ("llamacpp:tokens_predicted_total", "tiny-a") in got
        assert not any(model == "tiny-b" for name, model in got if name.startswith("llamacpp:"))
        assert SCRAPE_TIMEOUT_S <= took < SCRAPE_TIMEOUT_S + 1.0, f"the scrape took {took:.2f} s"
        print(f"scrape with one model frozen: {took:.3f} s")
        errors = {s.labels["reason"]: s.value for f in text_string_to_metric_families(scraped.text)
                  for s in f.samples if s.name == "llamadock_model_scrape_errors_total" and s.labels["model"] == "tiny-b"}
        assert errors == {"timeout": 1}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Back: its series return and the error count stays where it was.
    got = series(httpx.get(gateway.url + "/metrics", timeout=10).text)
    assert ("llamacpp:tokens_predicted_total", "tiny-b") in got
    assert got[("llamadock_model_scrape_errors_total", "tiny-b")] == 1
