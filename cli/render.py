"""How things look in the terminal, shared by the admin commands and the chat.

Text helpers (bars, sizes, durations, the stats line) are pure strings; the rest
builds rich renderables from the gateway's answers (contract types) without printing anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from common.sizes import format_size
from contract.gpu import GpuStatus
from contract.listing import Listing, ModelStatus
from contract.pools import LOCAL_NODE, PoolId
from contract.status import GatewayStatus, ModelObject

from .commands import HELP
from .model_list import ModelInfo, models_from_listing
from .params import LIMITS, Params
from .presets import SYSTEM_PRESETS, preset_name
from .sessions import SessionSummary
from .stream import AnswerStats
from .tables import Fitted

STATE_STYLE = {"ready": "green", "starting": "yellow", "stopped": "dim", "failed": "red"}
BAR_FULL, BAR_EMPTY = "█", "░"


# --- text ---------------------------------------------------------------------

def memory_bar(used: int | None, total: int | None, width: int = 20) -> str:
    """``████░░░░ 50%``; ``?`` bars when the driver does not say."""
    if used is None or not total:
        return "?" * width
    fraction = min(max(used / total, 0.0), 1.0)
    filled = round(fraction * width)
    return BAR_FULL * filled + BAR_EMPTY * (width - filled) + f" {fraction:.0%}"


def bar_style(used: int | None, total: int | None) -> str:
    if used is None or not total:
        return "dim"
    fraction = used / total
    return "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def stats_line(stats: AnswerStats) -> str:
    """``412 tokens · 1267.7 tok/s · TTFT 12 ms``, plus why the answer ended early."""
    parts = ["stopped"] if stats.stopped else []
    parts.append(f"{'' if stats.tokens_counted else '~'}{stats.tokens} tokens")
    if stats.tokens_per_second is not None:
        parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    parts.append(f"TTFT {duration(stats.first_token_s)}" if stats.first_token_s is not None else "no tokens")
    parts.append(f"{duration(stats.total_s)} total")
    if stats.finish_reason == "length" and not stats.stopped:
        parts.append("max_tokens or context reached")
    return " · ".join(parts)


# --- models and GPUs ----------------------------------------------------------

def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def admin_models_table(listing: Listing, placements: dict[str, str] | None = None,
                       others: Iterable[ModelObject] = ()) -> Fitted:
    """``GET /admin/models``: what the orchestrator runs, with sources and uptimes; ``placements``
    (model -> e.g. 'gpu0+gpu1 split 5:11', from /status) adds a GPU column when there is any;
    ``others``: the gateway's models the orchestrator does not run (the upstreams file's models and
    its providers' models), with where they come from as their source."""
    placements = {k: v for k, v in (placements or {}).items() if v}
    table = Table(title="Models", title_justify="left")
    for column in ("name", "state", "source", *(["gpu"] if placements else []), "image", "aliases", "uptime",
                   "reason"):
        table.add_column(column)
    for model in listing.models:
        spec = model.spec
        source = "?" if spec is None else spec.model or f"hf:{spec.hf}"
        where = [placements.get(model.name, "")] if placements else []
        table.add_row(model.name, state_text(model.state), source, *where, image_text(model),
                      ", ".join(model.aliases), uptime(model.uptime_s), model.reason or "")
    declared = {model.name for model in listing.models}
    for other in others:
        if other.id in declared:
            continue
        source = f"provider {other.provider}" if other.provider else "upstreams file"
        table.add_row(other.id, state_text(other.state), source, *([""] if placements else []), "-",
                      ", ".join(other.aliases), "-", other.reason or "")
    return Fitted(table, keep=("name", "state"), drop=("aliases", "image", "gpu", "uptime", "source"))


def image_text(model: ModelStatus) -> str:
    """The llama-server image its instance runs ("-" without one); "(own)" when its spec names it,
    so an upgrade of the stack's image passes it by."""
    image = model.instance.image if model.instance and model.instance.image else "-"
    own = model.spec is not None and model.spec.image is not None
    return f"{image} (own)" if own else image


def placements_from_status(status: GatewayStatus) -> dict[str, str]:
    """Where the gateway's scheduler placed each model (``/status``), as text."""
    models = status.scheduler.models if status.scheduler else {}
    return {name: m.placement.text if m.placement else "" for name, m in models.items()}


def models_table(models: list[ModelInfo], current: str | None = None,
                 vram: dict[str, int] | None = None, numbered: bool = False,
                 nodes: Mapping[str, str] | None = None) -> Fitted:
    """The gateway's models for the chat: state, aliases, VRAM when known, the node each runs on
    (``nodes``: on a swarm); the current one marked."""
    table = Table(title="Models", title_justify="left")
    if numbered:
        table.add_column("#", justify="right")
    for column in ("model", "state", *(["node"] if nodes is not None else []), "aliases",
                   *(["VRAM"] if vram is not None else []), "reason"):
        table.add_column(column)
    for number, model in enumerate(models, 1):
        name = Text(model.name, style="bold") if model.name == current else Text(model.name)
        if model.name == current:
            name.append(" ●", style="cyan")
        row: list = [name, state_text(model.state), *([nodes.get(model.name, "-")] if nodes is not None else []),
                     ", ".join(model.aliases)]
        if vram is not None:
            row.append(format_size(vram[model.name]) if model.name in vram else "-")
        row.append(model.reason or "")
        table.add_row(*([str(number)] if numbered else []), *row)
    return Fitted(table, keep=("#", "model", "state"), drop=("aliases", "VRAM"))


def vram_by_model(gpu: GpuStatus) -> dict[str, int]:
    """Bytes of GPU memory per model, summed over GPUs (``/gpu``'s per-GPU ``models``)."""
    totals: dict[str, int] = {}
    for device in gpu.gpus:
        for name, used in (device.models or {}).items():
            totals[name] = totals.get(name, 0) + used
    return totals


def gpu_view(gpu: GpuStatus) -> RenderableType:
    """``GET /gpu``: a table with a memory bar per GPU, or a plain sentence when there is none."""
    if not gpu.available:
        return Text(f"No GPU: {gpu.reason or 'none visible'}. Models run on the CPU.")
    table = Table(title="GPUs", title_justify="left")
    for column in ("#", "name", "memory", "used / total", "util", "temp", "power"):
        table.add_column(column)
    for device in gpu.gpus:
        used, total = device.memory.used_bytes, device.memory.total_bytes
        power, limit = device.power_w, device.power_limit_w
        table.add_row(
            str(device.index) if device.node == LOCAL_NODE else f"{device.node}/{device.index}", str(device.name or "?"),
            Text(memory_bar(used, total), style=bar_style(used, total)),
            f"{format_size(used)} / {format_size(total)}",
            _or_unknown(device.utilization.gpu_percent, "%"),
            _or_unknown(device.temperature_c, " °C"),
            f"{power:.0f} / {limit:.0f} W" if power is not None and limit else _or_unknown(power, " W"),
        )
    return Fitted(table, keep=("#", "used / total"), drop=("power", "temp", "memory", "util"))


def pools_view(status: GatewayStatus) -> RenderableType | None:
    """Every node's pools (a GPU, or the memory budget of a node without one) as the scheduler
    sees them: what it may fill, what our models and others use, what is free. Only on a swarm
    (on one box `make gpu` and the ps table say it all); None elsewhere."""
    scheduler = status.scheduler
    if scheduler is None or not scheduler.several_nodes or not scheduler.pools:
        return None
    table = Table(title="Pools", title_justify="left")
    for column in ("node", "pool", "memory", "models", "others", "free"):
        table.add_column(column, justify="right" if column in ("models", "others", "free") else "left")
    for key in sorted(scheduler.pools, key=lambda k: (PoolId.parse(k).node != LOCAL_NODE, PoolId.parse(k).node,
                                                      PoolId.parse(k).gpu or -1)):
        pool, pid = scheduler.pools[key], PoolId.parse(key)
        used = pool.models_bytes + pool.others_bytes
        table.add_row(pid.node, "memory" if pid.gpu is None else f"gpu{pid.gpu}",
                      Text(memory_bar(used, pool.capacity_bytes), style=bar_style(used, pool.capacity_bytes)),
                      format_size(pool.models_bytes), format_size(pool.others_bytes), format_size(pool.free_bytes))
    return Fitted(table, keep=("node", "pool", "free"), drop=("memory", "others", "models"))


def _or_unknown(value: object, unit: str) -> str:
    return "?" if value is None else f"{value}{unit}"


def status_view(status: GatewayStatus, current: str | None = None) -> RenderableType:
    """``GET /status``: the models with their VRAM, then the GPUs, then any warning."""
    nodes = None
    if status.scheduler is not None and status.scheduler.several_nodes:
        nodes = {name: m.node or LOCAL_NODE for name, m in status.scheduler.models.items()}
    parts: list[RenderableType] = [
        models_table(models_from_listing(status.models), current,
                     vram=vram_by_model(status.gpu) if status.gpu.available else None, nodes=nodes),
        gpu_view(status.gpu),
    ]
    pools = pools_view(status)
    if pools is not None:
        parts.append(pools)
    for warning in (status.upstreams_file_error, status.orchestrator_error):
        if warning:
            parts.append(Text(warning, style="yellow"))
    return Group(*parts)


# --- chat settings --------------------------------------------------------------

def params_table(params: Params) -> Table:
    table = Table(title="Params", title_justify="left", show_header=False, box=None, padding=(0, 2))
    values = params.body()
    for name, limit in LIMITS.items():
        shown = Text(str(values[name])) if name in values else Text("server default", style="dim")
        table.add_row(name, shown, Text(limit.meaning, style="dim"))
    return table


def system_text(system: str, presets: Mapping[str, str] = SYSTEM_PRESETS) -> Text:
    if not system:
        return Text("No system prompt (set one with /system PRESET or /system TEXT).", style="dim")
    preset = preset_name(system, dict(presets))
    text = Text(f"System prompt ({preset} preset): " if preset else "System prompt: ", style="bold")
    return text.append(system, style="")


def sessions_table(summaries: Iterable[SessionSummary]) -> Table:
    table = Table(title="Sessions", title_justify="left")
    for column in ("name", "model", "messages", "saved"):
        table.add_column(column)
    for s in summaries:
        if s.problem:
            table.add_row(s.name, Text(f"unreadable: {s.problem}", style="red"), "", _local(s.saved_at))
        else:
            table.add_row(s.name, s.model, str(s.message_count), _local(s.saved_at))
    return table


def _local(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else "?"


def help_table(presets: Mapping[str, str] = SYSTEM_PRESETS) -> Table:
    table = Table(title="Commands", title_justify="left", show_header=False, box=None, padding=(0, 2))
    for entry in HELP.values():
        table.add_row(Text(entry.usage, style="cyan"), entry.summary.replace("{presets}", ", ".join(presets)))
    table.add_row(Text('"""', style="cyan"), 'start and end a message of several lines')
    table.add_row(Text("Ctrl-C", style="cyan"), "stop the answer being written; twice at the prompt: leave")
    return table
