"""``llamadock ps [-w]``: what each model holds and does now, like ``ollama ps``.

``ps_view`` is pure: a parsed ``/status`` in, a rich renderable out; ``cmd_ps`` fetches and
prints it, or with ``-w`` redraws it every second until Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import datetime
from typing import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from common.sizes import format_size
from contract.pools import LOCAL_NODE, PoolId
from contract.status import GatewayStatus, ScheduledModel

from .api import Api, CallFailed
from .render import pools_view
from .tables import Fitted

STATE_STYLE = {"ready": "green", "starting": "yellow", "stopping": "yellow", "releasing": "yellow",
               "stopped": "dim", "failed": "red"}
LOADED = ("starting", "ready", "stopping", "releasing")  # phases that hold memory
REFRESH_S = 1.0


def countdown(seconds: float) -> str:
    """Whole seconds, rounded up (a ttl of 300 s just after the last use reads 5m00s)."""
    total = math.ceil(max(seconds, 0.0))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def device_bytes(model: ScheduledModel) -> int:
    """What it holds (or would) on the GPUs, or in the memory budget: the scheduler's need, else the estimate."""
    held = sum(model.need_bytes.values())
    return held or (model.estimate.total_bytes if model.estimate else 0)


def processor(model: ScheduledModel, on_gpus: bool) -> str:
    """``100% GPU``, ``48%/52% CPU/GPU`` or ``100% CPU``: RAM (``host_bytes``) against GPU memory."""
    if not on_gpus:
        return "100% CPU"
    device = device_bytes(model)
    host = model.estimate.host_bytes if model.estimate else 0
    if not device and not host:
        return "?"
    cpu = round(100 * host / (host + device))
    if cpu == 0:
        return "100% GPU"
    if cpu == 100:
        return "100% CPU"
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def total_size(model: ScheduledModel, on_gpus: bool) -> int:
    return device_bytes(model) + (model.estimate.host_bytes if on_gpus and model.estimate else 0)


def placement(model: ScheduledModel, on_gpus: bool) -> str:
    if model.phase not in LOADED:
        return "-"
    if not on_gpus:
        return "CPU"
    if model.placement and model.placement.gpus:
        gpus = model.placement.gpus
        if len(gpus) == 1:
            return f"GPU {gpus[0]}"
        split = model.placement.tensor_split
        return f"GPU {','.join(map(str, gpus))}" + (f" split {':'.join(map(str, split))}" if split else "")
    pools = sorted(model.actual_bytes or model.need_bytes)  # placed before the gateway started: where NVML sees it
    return "GPU " + ",".join(_gpu_number(p) for p in pools) if pools else "GPU"


def _gpu_number(pool: str) -> str:
    """``gpu1`` -> ``1``, another node's ``n2/gpu1`` -> ``n2/1`` (contract/pools.py keys)."""
    try:
        found = PoolId.parse(pool)
    except ValueError:
        return pool
    own = "RAM" if found.gpu is None else str(found.gpu)
    return own if found.node == LOCAL_NODE else f"{found.node}/{own}"


def until_unload(model: ScheduledModel) -> str:
    if model.pinned:
        return "never (pinned)"
    if model.ttl_s <= 0:
        return "never"
    if model.phase != "ready":
        return "-"
    if model.idle_s is None:  # requests running or waiting: the ttl starts after the last one
        return f"busy, then {countdown(model.ttl_s)}"
    return countdown(model.ttl_s - model.idle_s)


def context(model: ScheduledModel) -> str:
    if model.ctx_size is None:
        return "?"
    return "model's" if model.ctx_size == 0 else str(model.ctx_size)


def saved(model: ScheduledModel) -> str:
    """Conversations whose KV cache waits on disk for the model's next start, and their size."""
    if not model.kv_saved:
        return "-"
    return f"{model.kv_saved} ({format_size(model.kv_saved_bytes)})"


# Narrower than the terminal, columns go in this order; NAME and STATE are never cut (README).
DROP_FIRST = ("SAVED", "PROVIDER", "NODE", "PLACEMENT", "SLOTS", "CONTEXT", "PROCESSOR", "VRAM USED", "QUEUED", "RUNNING", "UNLOADS IN", "SIZE")
COLUMNS = (("NAME", "left"), ("STATE", "left"), ("PROVIDER", "left"), ("SIZE", "right"), ("VRAM USED", "right"), ("PROCESSOR", "left"),
           ("NODE", "left"), ("PLACEMENT", "left"), ("CONTEXT", "right"), ("SLOTS", "right"), ("RUNNING", "right"),
           ("QUEUED", "right"), ("SAVED", "right"), ("UNLOADS IN", "left"))


def ps_row(name: str, model: ScheduledModel, on_gpus: bool) -> dict[str, Text | str]:
    loaded = model.phase in LOADED
    return {
        "NAME": Text(name, style="bold" if loaded else "dim"),
        "STATE": Text(model.phase, style=STATE_STYLE.get(model.phase, "")),
        "SIZE": format_size(total_size(model, on_gpus) or None, missing="-"),  # 0: nothing known either
        "VRAM USED": format_size(sum((model.actual_bytes or {}).values()) or None, missing="-") if loaded else "-",
        "PROCESSOR": processor(model, on_gpus),
        "NODE": model.node or "-",
        "PLACEMENT": placement(model, on_gpus),
        "CONTEXT": context(model),
        "SLOTS": str(model.parallel) if model.parallel else "?",
        "RUNNING": f"{model.in_flight}/{model.limit}" if loaded or model.in_flight else "-",
        "QUEUED": str(model.queued) if model.queued else "-",
        "SAVED": saved(model),
        "UNLOADS IN": until_unload(model),
    }


def scheduled_on_nodes(status: GatewayStatus) -> bool:
    scheduler = status.scheduler
    return scheduler is not None and (scheduler.several_nodes or any(
        m.node not in (None, LOCAL_NODE) for m in scheduler.models.values()))


def ps_view(status: GatewayStatus, now: datetime | None = None) -> RenderableType:
    """The table of models, one row each in the gateway's order, failures explained below it.
    ``now``: the time to show above it (the live view)."""
    on_gpus = status.on_gpus
    shown = {"VRAM USED": on_gpus,  # no NVML on a CPU
             "PROVIDER": any(m.provider for m in status.models),  # another server's models are listed
             # A swarm, or a model on a node that is not the backend's own: where each one runs.
             "NODE": scheduled_on_nodes(status)}
    columns = [(name, justify) for name, justify in COLUMNS if shown.get(name, True)]
    scheduled = status.scheduler.models if status.scheduler else {}
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    notes: list[Text] = []
    for routed in status.models:
        model = scheduled.get(routed.id)
        if model is None:  # a static upstream or a provider's model (config/upstreams.yaml): only routed to
            cells: dict = {"NAME": routed.id, "STATE": Text(routed.state, style=STATE_STYLE.get(routed.state, "")),
                           "UNLOADS IN": "-" if routed.provider else "never"}
        else:
            cells = ps_row(routed.id, model, on_gpus)
        cells["PROVIDER"] = routed.provider or "-"
        table.add_row(*(cells.get(name, "-") for name, _ in columns))
        if routed.reason and routed.state == "failed" and not routed.provider:
            notes.append(Text(f"{routed.id}: {routed.reason}", style="red"))
    for provider in status.providers:  # one line per provider that is not answering, not one per model
        if provider.reason:
            notes.append(Text(f"provider {provider.name} ({provider.url}): {provider.reason}", style="red"))
    parts: list[RenderableType] = []
    if now is not None:
        parts.append(Text(f"{now:%H:%M:%S} · every {REFRESH_S:g} s · Ctrl-C leaves", style="dim"))
    parts.append(Fitted(table, keep=("NAME", "STATE"), drop=DROP_FIRST) if status.models else Text("No models: add one with `make add NAME=… MODEL=…`.",
                                                  style="yellow"))
    parts += notes
    pools = pools_view(status)  # on a swarm: every node's pools
    if pools is not None:
        parts.append(pools)
    if status.orchestrator_error:
        parts.append(Text(f"The orchestrator is away: {status.orchestrator_error}", style="yellow"))
    return Group(*parts)


def fetch(api: Api) -> GatewayStatus:
    return api.get(GatewayStatus, "GET", "/status")


def cmd_ps(api: Api, console: Console, args: argparse.Namespace,
           now: Callable[[], datetime] = datetime.now) -> int:
    if not args.watch:
        console.print(ps_view(fetch(api)))
        return 0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                try:
                    view = ps_view(fetch(api), now())
                except CallFailed as exc:  # the gateway restarting: say so and keep trying
                    view = Group(Text(f"{now():%H:%M:%S} · Ctrl-C leaves", style="dim"), Text(str(exc), style="red"))
                live.update(view, refresh=True)
                time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        return 0
