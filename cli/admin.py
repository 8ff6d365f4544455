"""`llamadock models|gpu|status`: the admin side of the CLI, rendered with rich."""

from __future__ import annotations

import argparse
import shlex
import threading
import time

from rich.console import Console
from rich.table import Table

from orchestrator.spec import source_from_text

from .api import Api, ApiError

STATE_STYLE = {"ready": "green", "starting": "yellow", "stopped": "dim", "failed": "red"}


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def models_table(listing: dict) -> Table:
    table = Table(title="Models", title_justify="left")
    for column in ("name", "state", "source", "aliases", "uptime", "reason"):
        table.add_column(column)
    for model in listing.get("models", []):
        spec = model.get("spec") or {}
        style = STATE_STYLE.get(model["state"], "")
        table.add_row(model["name"], f"[{style}]{model['state']}[/]", spec.get("model") or f"hf:{spec.get('hf')}",
                      ", ".join(model.get("aliases") or []), _uptime(model.get("uptime_s")), model.get("reason") or "")
    return table


def cmd_models(api: Api, console: Console, args: argparse.Namespace) -> int:
    listing = api.request("GET", "/admin/models", admin=True)
    console.print(models_table(listing))
    if listing.get("available"):
        console.print("[dim]GGUF files in models/ not declared yet:[/] " + ", ".join(listing["available"]))
    for warning in (listing.get("host") or {}).get("warnings", []):
        console.print(f"[yellow]{warning}[/]")
    if listing.get("catalog_error"):
        console.print(f"[red]config/models.yaml: {listing['catalog_error']}[/]")
    return 0


def spec_from_args(args: argparse.Namespace) -> dict:
    spec: dict = {"name": args.name, **source_from_text(args.source)}
    if args.alias:
        spec["aliases"] = [a for value in args.alias for a in value.split(",") if a]
    for key in ("ctx_size", "parallel", "mmproj", "image"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.gpu_layers is not None:
        spec["gpu_layers"] = "all" if args.gpu_layers == "all" else int(args.gpu_layers)
    if args.args_text:
        spec["args"] = shlex.split(args.args_text)
    return spec


def cmd_add(api: Api, console: Console, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    result: dict = {}

    def post() -> None:
        try:
            result["ok"] = api.request("POST", "/admin/models", admin=True, json=spec,
                                       params={"replace": str(args.replace).lower()})
        except ApiError as exc:
            result["error"] = exc

    worker = threading.Thread(target=post, daemon=True)
    started = time.monotonic()
    worker.start()
    with console.status(f"Starting {spec['name']}…") as status:
        while worker.is_alive():
            worker.join(0.5)
            line = _last_log_line(api, spec["name"])
            status.update(f"Starting {spec['name']} ({time.monotonic() - started:.0f} s)"
                          + (f"  [dim]{line[:100]}[/]" if line else ""))
    if "error" in result:
        raise result["error"]
    model = result["ok"]
    console.print(f"[green]{model['name']}[/] is {model['state']} "
                  f"({time.monotonic() - started:.1f} s). Send requests with model=\"{model['name']}\".")
    return 0


def _last_log_line(api: Api, name: str) -> str:
    try:
        text = "".join(api.stream_text(f"/admin/models/{name}/logs", admin=True, params={"tail": 1}))
    except ApiError:
        return ""
    return text.strip().splitlines()[-1] if text.strip() else ""


def cmd_rm(api: Api, console: Console, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/admin/models/{args.name}", admin=True)
    console.print(f"Removed {args.name}.")
    return 0


def cmd_restart(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status(f"Restarting {args.name}…"):
        model = api.request("POST", f"/admin/models/{args.name}/restart", admin=True)
    console.print(f"{model['name']} is {model['state']}.")
    return 0


def cmd_reconcile(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status("Reconciling with config/models.yaml…"):
        report = api.request("POST", "/admin/reconcile", admin=True)
    for key in ("started", "recreated", "removed", "unchanged"):
        if report.get(key):
            console.print(f"{key}: {', '.join(report[key])}")
    for name, reason in (report.get("failed") or {}).items():
        console.print(f"[red]failed: {name}: {reason}[/]")
    return 1 if report.get("failed") else 0


def cmd_logs(api: Api, console: Console, args: argparse.Namespace) -> int:
    for text in api.stream_text(f"/admin/models/{args.name}/logs", admin=True,
                                params={"tail": args.tail, "follow": str(args.follow).lower()}):
        console.out(text, end="", highlight=False)
    return 0


def cmd_gpu(api: Api, console: Console, args: argparse.Namespace) -> int:
    gpu = api.request("GET", "/gpu")
    if not gpu.get("available"):
        console.print(f"No GPU: {gpu.get('reason') or 'none visible'}. Models run on the CPU.")
        return 0
    table = Table(title="GPUs", title_justify="left")
    for column in ("#", "name", "memory used / total", "util", "temp"):
        table.add_column(column)
    for dev in gpu.get("gpus", []):
        memory, util = dev.get("memory") or {}, dev.get("utilization") or {}
        used, total = memory.get("used_bytes"), memory.get("total_bytes")
        mem = f"{used / 2**30:.1f} / {total / 2**30:.1f} GiB" if used is not None and total else "?"
        table.add_row(str(dev.get("index")), str(dev.get("name")), mem,
                      f"{util.get('gpu_percent') if util.get('gpu_percent') is not None else '?'}%", f"{dev.get('temperature_c', '?')} °C")
    console.print(table)
    return 0


def cmd_status(api: Api, console: Console, args: argparse.Namespace) -> int:
    cmd_models(api, console, args)
    return cmd_gpu(api, console, args)
