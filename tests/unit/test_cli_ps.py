"""`llamadock ps`: /status parsed into typed objects, and the table rendered from them (pure)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from rich.console import Console

from cli.api import Api, CallFailed, Connection
from cli.ps import countdown, fetch, processor, ps_view, until_unload
from contract.status import GatewayStatus, ScheduledModel

GIB, MIB = 2**30, 2**20


def status(models: dict[str, dict], *, gpu: bool, pools: dict | None = None, states: dict | None = None,
           reasons: dict | None = None) -> dict:
    """A /status body shaped as the gateway sends it (gateway/scheduling/lifecycle.py describe)."""
    pools = pools if pools is not None else ({"gpu0": {"capacity_bytes": 80 * GIB}} if gpu else {})
    return {
        "models": [{"id": name, "state": (states or {}).get(name, "ready"), "reason": (reasons or {}).get(name),
                    "aliases": []} for name in models],
        "gpu": {"available": gpu, "gpus": []},
        "scheduler": {"pools": pools, "models": models},
    }


def model(**fields) -> dict:
    base = {"phase": "ready", "in_flight": 0, "queued": 0, "limit": 1, "need_bytes": {}, "pinned": False,
            "ttl_s": 0.0, "swap_group": None, "placement": None, "estimate": None, "overhead_learned_bytes": None,
            "actual_bytes": None, "idle_s": 3.0, "ctx_size": 4096, "parallel": 1}
    return {**base, **fields}


def render(body: dict, now: datetime | None = None) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(ps_view(GatewayStatus.model_validate(body), now))
    return console.export_text()


def row(text: str, name: str) -> list[str]:
    """The cells of ``name``'s row (columns are two spaces apart or more)."""
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return [cell for cell in line.split("  ") if cell.strip()]


def test_cpu_host_with_a_memory_budget():
    body = status({"tiny": model(need_bytes={"budget": 120 * MIB}, estimate={"total_bytes": 120 * MIB},
                                 ctx_size=2048, parallel=2, limit=2, in_flight=1, queued=3, idle_s=None,
                                 ttl_s=300)},
                  gpu=False, pools={"budget": {"capacity_bytes": 1 * GIB}})
    text = render(body)
    assert "VRAM USED" not in text  # nothing measures a CPU model's memory
    assert [c.strip() for c in row(text, "tiny")] == \
        ["tiny", "ready", "120 MiB", "100% CPU", "CPU", "2048", "2", "1/2", "3", "-", "busy, then 5m00s"]


def test_gpu_host_fully_offloaded_on_one_gpu():
    body = status({"qwen3": model(need_bytes={"gpu0": 6 * GIB}, estimate={"total_bytes": 6 * GIB, "host_bytes": 0},
                                  actual_bytes={"gpu0": int(5.5 * GIB)},
                                  placement={"gpus": [0], "tensor_split": None, "text": "gpu0"},
                                  ctx_size=8192, parallel=4, limit=4, in_flight=2, idle_s=None, ttl_s=0)},
                  gpu=True)
    cells = [c.strip() for c in row(render(body), "qwen3")]
    assert cells == ["qwen3", "ready", "6.0 GiB", "5.5 GiB", "100% GPU", "GPU 0", "8192", "4", "2/4", "-", "-", "never"]


def test_split_over_two_gpus_with_part_in_ram():
    body = status({"big": model(need_bytes={"gpu0": 30 * GIB, "gpu1": 22 * GIB},
                                estimate={"total_bytes": 50 * GIB, "host_bytes": 48 * GIB},
                                placement={"gpus": [0, 1], "tensor_split": [28000, 20000], "text": "x"})},
                  gpu=True, pools={"gpu0": {}, "gpu1": {}})
    cells = [c.strip() for c in row(render(body), "big")]
    assert cells[2] == "100.0 GiB"  # 52 GiB on the GPUs + 48 GiB in RAM
    assert cells[4] == "48%/52% CPU/GPU"
    assert cells[5] == "GPU 0,1 split 28000:20000"


def test_pinned_never_unloads_and_a_stopped_model_shows_its_estimate():
    body = status({"keep": model(pinned=True, ttl_s=60, need_bytes={"budget": 100 * MIB}),
                   "idle": model(phase="stopped", idle_s=None, ttl_s=60, estimate={"total_bytes": 2 * GIB})},
                  gpu=False, states={"idle": "stopped"})
    text = render(body)
    assert row(text, "keep")[-1].strip() == "never (pinned)"
    idle = [c.strip() for c in row(text, "idle")]
    assert idle[1:4] == ["stopped", "2.0 GiB", "100% CPU"]
    assert idle[4] == "-" and idle[-1] == "-"  # no placement, no countdown while not loaded


@pytest.mark.parametrize("idle_s, shown", [(0.0, "5m00s"), (0.4, "5m00s"), (59.5, "4m01s"), (299.2, "1s"),
                                           (300.0, "0s"), (400.0, "0s")])
def test_ttl_counts_down_from_the_last_use(idle_s, shown):
    assert until_unload(ScheduledModel(phase="ready", ttl_s=300, idle_s=idle_s)) == shown


def test_ttl_cases():
    assert until_unload(ScheduledModel(phase="ready", ttl_s=0, idle_s=5)) == "never"
    assert until_unload(ScheduledModel(phase="starting", ttl_s=30)) == "-"
    assert until_unload(ScheduledModel(phase="ready", ttl_s=30, idle_s=None)) == "busy, then 30s"
    assert countdown(3 * 3600 + 5 * 60) == "3h05m"


@pytest.mark.parametrize("host, device, shown", [(0, 10, "100% GPU"), (10, 0, "100% CPU"), (1, 1, "50%/50% CPU/GPU"),
                                                 (1, 999, "100% GPU"), (0, 0, "?")])
def test_processor_split_from_the_estimate(host, device, shown):
    m = ScheduledModel(need_bytes={"gpu0": device} if device else {}, estimate={"total_bytes": 0, "host_bytes": host})
    assert processor(m, on_gpus=True) == shown
    assert processor(m, on_gpus=False) == "100% CPU"


def test_a_failed_model_says_why_below_the_table():
    body = status({"bad": model(phase="failed", idle_s=None)}, gpu=False, states={"bad": "failed"},
                  reasons={"bad": "exited with code 1: invalid GGUF"})
    text = render(body)
    assert row(text, "bad")[1].strip() == "failed"
    assert "bad: exited with code 1: invalid GGUF" in text


def test_static_upstreams_without_a_scheduler_and_an_older_gateway():
    body = {"models": [{"id": "remote", "state": "ready"}], "gpu": {"available": False}, "scheduler": None}
    assert [c.strip() for c in row(render(body), "remote")][:2] == ["remote", "ready"]
    # Fields this view reads may be missing (an older gateway): unknown, not an error.
    old = status({"m": {"phase": "ready", "in_flight": 0, "queued": 0, "limit": 1}}, gpu=False)
    cells = [c.strip() for c in row(render(old), "m")]
    assert cells[5:7] == ["?", "?"]  # context and slots unknown


def test_the_live_view_shows_the_time_and_an_empty_stack_says_what_to_do():
    text = render(status({}, gpu=False), datetime(2025, 1, 2, 13, 4, 5))
    assert "13:04:05" in text and "make add" in text


def test_unreadable_status_is_a_clear_error():
    api = Api(Connection("http://gateway"))
    api.client = httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json={"models": "nope"})))
    with pytest.raises(CallFailed, match="/status does not read as expected"):
        fetch(api)


# ---- narrow terminals and pipes: names and states are never cut (cli/tables.py) ----------------

LONG = "a-model-whose-name-is-forty-characters-x"  # 40 characters


def render_at(body: dict, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(ps_view(GatewayStatus.model_validate(body)))
    return console.export_text()


def two_models() -> dict:
    return status({LONG: model(need_bytes={"gpu0": 3 * GIB}, placement={"pools": ["gpu0"], "text": "gpu0"},
                               ctx_size=8192, parallel=8, limit=8, ttl_s=300),
                   "bar-tiny": model(phase="stopped", need_bytes={"gpu0": 81 * MIB}, idle_s=None, kv_saved=2,
                                     kv_saved_bytes=14 * MIB)},
                  gpu=True, states={"bar-tiny": "stopped"})


@pytest.mark.parametrize("width", [40 + 2 + 7 + 2, 60, 80, 100, 120])
def test_a_narrow_terminal_drops_columns_and_never_cuts_a_name_or_state(width):
    text = render_at(two_models(), width)
    assert "…" not in text, text
    assert all(len(line) <= width for line in text.splitlines()), text
    assert row(text, LONG)[:2] == [LONG, "ready"], text
    assert row(text, "bar-tiny")[:2] == ["bar-tiny", "stopped"], text


def test_columns_go_in_the_documented_order():
    from cli.ps import COLUMNS, DROP_FIRST

    # PROVIDER only when a provider's model is listed, NODE only on a swarm
    own = [name for name, _ in COLUMNS if name not in ("PROVIDER", "NODE")]
    drop = [name for name in DROP_FIRST if name not in ("PROVIDER", "NODE")]
    shown = []
    for width in range(51, 200):
        header = next(line for line in render_at(two_models(), width).splitlines() if line.startswith("NAME"))
        shown.append(tuple(name for name in own if name in header))
    # Each wider terminal shows the same columns or more, and what is missing is DROP_FIRST's head.
    assert all(set(a) <= set(b) for a, b in zip(shown, shown[1:]))
    for columns in set(shown):
        missing = {name for name in own if name not in columns}
        assert missing == set(drop[:len(missing)]), (columns, missing)
    assert set(shown[-1]) == set(own)  # wide enough: every column


def test_no_terminal_prints_every_column_whatever_columns_says(monkeypatch):
    import io

    from cli.console import make_console

    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()  # a pipe: no terminal
    console = make_console(out)
    console.print(ps_view(GatewayStatus.model_validate(two_models())))
    text = out.getvalue()
    assert "\x1b[" not in text  # no colours into a pipe
    header = next(line for line in text.splitlines() if line.startswith("NAME"))
    assert "PLACEMENT" in header and "UNLOADS IN" in header
    assert row(text, LONG)[:2] == [LONG, "ready"]


def test_saved_conversations_show_with_their_size_and_go_first_when_narrow():
    wide = render_at(two_models(), 200)
    assert "2 (14 MiB)" in next(line for line in wide.splitlines() if line.startswith("bar-tiny")), wide
    header = wide.splitlines()[0]
    assert header.index("QUEUED") < header.index("SAVED") < header.index("UNLOADS IN")
    assert "SAVED" not in render_at(two_models(), 120).splitlines()[0]


def test_a_providers_models_show_their_provider_and_a_provider_down_is_said_once():
    body = two_models()
    body["models"] += [{"id": "lmstudio:qwen", "state": "stopped", "provider": "lmstudio", "aliases": ["qwen"],
                        "reason": "provider lmstudio: cannot connect"},
                       {"id": "lmstudio:phi", "state": "stopped", "provider": "lmstudio"}]
    body["providers"] = [{"name": "lmstudio", "url": "http://127.0.0.1:1234", "state": "stopped",
                          "reason": "cannot connect", "code": "provider_unavailable", "models": 2}]
    text = render_at(body, 200)
    assert "PROVIDER" in text.splitlines()[0]
    assert [c.strip() for c in row(text, "lmstudio:qwen")[:3]] == ["lmstudio:qwen", "stopped", "lmstudio"]
    assert row(text, LONG)[2].strip() == "-"  # one of ours
    assert text.count("provider lmstudio (http://127.0.0.1:1234): cannot connect") == 1


def test_the_node_column_shows_on_a_swarm_and_on_another_node_only():
    one_box = status({"tiny": model(node="local")}, gpu=False, pools={"budget": {"capacity_bytes": GIB}})
    assert "NODE" not in render(one_box)
    swarm = status({"tiny": model(node="local"), "off": model(phase="stopped", idle_s=None)}, gpu=False,
                   pools={"budget": {"capacity_bytes": GIB}}, states={"off": "stopped"})
    swarm["scheduler"]["several_nodes"] = True
    text = render(swarm)
    header = next(line for line in text.splitlines() if line.startswith("NAME"))
    assert header.index("PROCESSOR") < header.index("NODE") < header.index("PLACEMENT")
    assert row(text, "tiny")[4].strip() == "local" and row(text, "off")[4].strip() == "-"
    elsewhere = status({"big": model(node="box2", need_bytes={"box2/gpu0": GIB})}, gpu=True,
                       pools={"box2/gpu0": {"capacity_bytes": 24 * GIB}})
    cells = [c.strip() for c in row(render(elsewhere), "big")]
    at = cells.index("100% GPU")
    assert cells[at + 1:at + 3] == ["box2", "GPU box2/0"], cells


def test_on_a_swarm_every_nodes_pools_show_below_the_models():
    pools = {"budget": {"capacity_bytes": 150 * MIB, "models_bytes": 100 * MIB, "free_bytes": 50 * MIB},
             "node3/budget": {"capacity_bytes": 150 * MIB, "free_bytes": 150 * MIB},
             "node2/gpu0": {"capacity_bytes": 12 * GIB, "models_bytes": 4 * GIB, "others_bytes": GIB,
                            "free_bytes": 7 * GIB}}
    swarm = status({"tiny": model(node="local")}, gpu=False, pools=pools)
    assert "Pools" not in render(swarm)  # one box: the table says it all
    swarm["scheduler"]["several_nodes"] = True
    text = render(swarm)
    lines = text.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("Pools")))
    rows = [[c for c in line.replace("│", " ").split() if c] for line in lines[at:] if line.strip()]
    nodes = [r[0] for r in rows if r and r[0] in ("local", "node2", "node3")]
    assert nodes == ["local", "node2", "node3"]  # the manager's first, then by name
    node2 = next(r for r in rows if r and r[0] == "node2")
    assert node2[1] == "gpu0" and " ".join(node2).endswith("4.0 GiB 1.0 GiB 7.0 GiB")
    node3 = next(r for r in rows if r and r[0] == "node3")
    assert node3[1] == "memory" and " ".join(node3).endswith("0 MiB 0 MiB 150 MiB")


def test_the_chats_status_shows_each_models_node_and_the_pools_on_a_swarm():
    from cli.render import status_view

    body = status({"tiny": model(node="node3")}, gpu=False, pools={"node3/budget": {"capacity_bytes": 150 * MIB}})
    body["scheduler"]["several_nodes"] = True
    console = Console(width=200, record=True, color_system=None)
    console.print(status_view(GatewayStatus.model_validate(body)))
    text = console.export_text()
    tiny = next(line for line in text.splitlines() if "tiny" in line)
    assert "node3" in tiny
    assert "Pools" in text and "memory" in text
