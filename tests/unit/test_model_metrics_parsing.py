"""Per-model metrics: relabelling a real llama-server /metrics text, eviction reasons, crashes,
and the Grafana dashboard's queries against the series the gateway serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.listing import listing as listed, status
from gateway.metrics import GatewayMetrics
from support import dashboard
from gateway.model_metrics import (EVICTION_REASONS, Families, crashed, eviction_reason, parse, relabel)
from gateway.scheduling.scheduler import Arrive, KeepAlive, Phase, Policy, State, Stop, StopKind, Model, Tick, Unload, step

# Captured from the vendored llama-server (--metrics) after one chat request.
CAPTURED = (Path(__file__).parent / "data" / "llama_server_metrics.txt").read_text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def exposition(per_model: dict[str, str]) -> str:
    return generate_latest(Families(relabel({m: parse(t) for m, t in per_model.items()}))).decode()


# ---- relabelling -----------------------------------------------------------------------------------

def test_every_series_of_each_model_comes_back_with_its_model_label():
    out = exposition({"tiny-a": CAPTURED, "tiny-b": CAPTURED.replace("llamacpp:tokens_predicted_total 8",
                                                                      "llamacpp:tokens_predicted_total 99")})
    got = samples(out)
    original = samples(CAPTURED)
    assert len(got) == 2 * len(original)
    for (name, labels), value in original.items():
        assert got[(name, (("model", "tiny-a"),))] == value
    assert got[("llamacpp:tokens_predicted_total", (("model", "tiny-b"),))] == 99
    # The names llama-server uses, colons and all, and the gauges it reads tokens/s from.
    assert 'llamacpp:prompt_tokens_total{model="tiny-a"} 29.0' in out
    assert 'llamacpp:predicted_tokens_seconds{model="tiny-b"} 2903.36' in out
    assert 'llamacpp:requests_deferred{model="tiny-a"} 0.0' in out


def test_each_family_appears_once_with_help_and_type():
    out = exposition({"a": CAPTURED, "b": CAPTURED, "c": CAPTURED})
    types = re.findall(r"^# TYPE (\S+) (\S+)$", out, re.M)
    assert len(types) == len({name for name, _ in types}) == len(list(text_string_to_metric_families(CAPTURED)))
    assert ("llamacpp:prompt_tokens_total", "counter") in types
    assert ("llamacpp:requests_processing", "gauge") in types


def test_a_model_label_the_server_set_is_kept_as_exported_model():
    text = '# TYPE x_things gauge\nx_things{model="inner",slot="0"} 3\n'
    assert samples(exposition({"outer": text})) == {
        ("x_things", (("exported_model", "inner"), ("model", "outer"), ("slot", "0"))): 3}


def test_a_family_with_another_type_under_the_same_name_is_left_out_for_that_model():
    gauge, counter = "# TYPE x gauge\nx 1\n", "# TYPE x_total counter\nx_total 2\n"
    assert samples(exposition({"a": gauge, "b": counter})) == {("x", (("model", "a"),)): 1}


def test_no_models_no_series():
    assert generate_latest(Families(relabel({}))) == b""


@pytest.mark.parametrize("text", ["<html>not metrics</html>", "x{model=\"a\" 1\n", "# TYPE x gauge\nx one\n"])
def test_what_is_not_the_exposition_format_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse(text)


# ---- eviction reasons ------------------------------------------------------------------------------

def _model(name, phase=Phase.STOPPED, *, need=2 * 2**30, ttl=0.0, group=None, last_used=0.0) -> Model:
    return Model(name, Policy(limit=1, queue=8, ttl_s=ttl, pinned=False, swap_group=group, need={"gpu0": need}),
                 phase, last_used=last_used)


def _stops(state: State, event) -> list[Stop]:
    return [a for a in step(state, event)[1] if isinstance(a, Stop)]


def _state(*models: Model) -> State:
    return State(models={m.name: m for m in models}, capacity={"gpu0": 4 * 2**30}, external={})


@pytest.mark.parametrize("state, event, expected", [
    (_state(_model("a", Phase.READY, ttl=10)), Tick(100), "ttl"),
    (_state(_model("a", Phase.READY, need=3 * 2**30), _model("b")), Arrive(1, "b", 1), "room"),
    (_state(_model("a", Phase.READY, group="g", need=1), _model("b", group="g", need=1)), Arrive(1, "b", 1),
     "swap_group"),
    (_state(_model("a", Phase.READY)), Unload("a", 1), "admin"),
    (_state(_model("a", Phase.READY)), KeepAlive("a", 0, 1), "admin"),
], ids=["ttl", "room", "swap_group", "unload", "keep_alive"])
def test_the_schedulers_own_stop_reasons_map_to_their_label(state, event, expected):
    stops = _stops(state, event)
    assert [eviction_reason(s.kind) for s in stops] == [expected]


@pytest.mark.parametrize("kind, label", [
    (StopKind.IDLE, "ttl"), (StopKind.ROOM, "room"), (StopKind.SWAP_GROUP, "swap_group"),
    (StopKind.UNLOAD, "admin"), (StopKind.KEEP_ALIVE, "admin"),
])
def test_eviction_reason_table(kind, label):
    assert eviction_reason(kind) == label and label in EVICTION_REASONS


def test_every_stop_kind_has_its_label_and_a_new_one_is_other():
    assert {eviction_reason(kind) for kind in StopKind} <= set(EVICTION_REASONS) - {"other"}
    assert eviction_reason("something new") == "other"  # a kind added without a label of its own


def test_crashed_is_a_ready_model_the_listing_shows_stopped_or_failed():
    before = {"up": "ready", "gone": "ready", "died": "ready", "we_stopped": "stopping", "loading": "starting"}
    models = [status("up", "ready"), status("gone", "stopped"), status("died", "failed"),
              status("we_stopped", "stopped"), status("loading", "failed"), status("new", "failed")]
    assert crashed(before, models) == ["gone", "died"]


# ---- the dashboard ---------------------------------------------------------------------------------

def test_the_dashboard_is_grafana_json_with_a_datasource_variable_and_prometheus_targets():
    board = dashboard.load()
    assert isinstance(board["schemaVersion"], int) and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 10
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        assert all(t["expr"] and t["refId"] for t in panel["targets"])


def test_every_metric_the_dashboard_queries_is_one_the_gateway_serves():
    served = generate_latest(GatewayMetrics().registry).decode() + exposition({"m": CAPTURED})
    assert dashboard.names_missing_from(served) == set()
    used = dashboard.metric_names(dashboard.load())
    # It shows what it is for: tokens/s, requests in llama-server, the queue, swaps, evictions, load time, TTFT.
    assert {"llamacpp:tokens_predicted_total", "llamacpp:requests_processing", "llamacpp:requests_deferred",
            "llamadock_queue_depth", "llamadock_swaps_total", "llamadock_evictions_total",
            "llamadock_model_start_seconds_bucket", "llamadock_time_to_first_token_seconds_bucket"} <= used


# ---- counted where the scheduler's decisions are carried out ------------------------------------------

def _count(metrics: GatewayMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_lifecycle_counts_evictions_swaps_and_crashes():
    import asyncio

    import httpx

    from gateway.gpu import NvmlReader
    from gateway.scheduling.lifecycle import Lifecycle
    from gateway.scheduling.inputs import Defaults

    class NoGpu(NvmlReader):
        def read(self, pids):  # the scheduler's pools come from the budget here
            from contract.gpu import GpuStatus
            return GpuStatus(available=False, reason="none")

    def listing(**states):
        return listed(*(status(n, st, need_bytes=3 * 2**30, ttl=10 if n == "a" else 0) for n, st in states.items()))

    async def scenario() -> GatewayMetrics:
        metrics, now = GatewayMetrics(), [0.0]
        # Nothing listens there: the stop is asked for, fails, and the next listing tells the truth.
        async with httpx.AsyncClient() as client:
            life = Lifecycle(client, "http://127.0.0.1:9", Defaults(memory_budget=4 * 2**30), NoGpu(), metrics,
                             clock=lambda: now[0])
            life.on_listing(listing(a="ready", b="stopped"))
            life.request("b")  # b needs a's room: a is stopped to make it
            life.on_listing(listing(a="stopped", b="ready"))
            now[0] = 100.0
            life.on_listing(listing(a="stopped", b="ready"))
            life.on_listing(listing(a="stopped", b="failed"))  # b went away on its own
            await life.stop()
        return metrics

    metrics = asyncio.run(scenario())
    assert _count(metrics, "llamadock_evictions_total", model="a", reason="room") == 1
    assert _count(metrics, "llamadock_swaps_total", model="a") == 1
    assert _count(metrics, "llamadock_evictions_total", model="b", reason="crash") == 1
    assert _count(metrics, "llamadock_swaps_total", model="b") == 0
