"""`llamadock models|gpu|status`: the admin side of the CLI, rendered with rich."""

from __future__ import annotations

import argparse
import threading
import time

from rich.console import Console

from contract.adding import Added
from contract.gpu import GpuStatus
from contract.images import LlamaImages, UpgradeReport
from contract.listing import Listing, ModelStatus, ReconcileReport
from contract.spec import source_from_text
from contract.status import GatewayStatus, Loaded, Unloaded, UnloadedIdle

from .api import Api, CallFailed
from .render import admin_models_table, gpu_view, placements_from_status
from .spec_options import spec_values, unset_fields


def cmd_models(api: Api, console: Console, args: argparse.Namespace) -> int:
    listing = api.get(Listing, "GET", "/admin/models", admin=True)
    try:
        status = api.get(GatewayStatus, "GET", "/status")
    except CallFailed:
        status = GatewayStatus()  # an older gateway: no GPU column, only the orchestrator's models
    console.print(admin_models_table(listing, placements_from_status(status), status.models))
    for provider in status.providers:
        if provider.reason:
            console.print(f"[red]provider {provider.name} ({provider.url}): {provider.reason}[/]")
    if listing.available:
        console.print("[dim]GGUF files in models/ not declared yet:[/] " + ", ".join(listing.available))
    for warning in listing.host.warnings:
        console.print(f"[yellow]{warning}[/]")
    if listing.catalog_error:
        console.print(f"[red]config/models.yaml: {listing.catalog_error}[/]")
    return 0


def spec_from_args(args: argparse.Namespace) -> dict:
    """The body of an add: name, source and every spec field given (cli/spec_options.py)."""
    given = {k: v for k, v in spec_values(args).items() if v is not None}  # empty: the default
    return {"name": args.name, **source_from_text(args.source), **given}


def cmd_add(api: Api, console: Console, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    params = {"replace": str(args.replace).lower(), "start": str(not args.no_start).lower()}
    if args.no_start:
        added = api.get(Added, "POST", "/admin/models", admin=True, json=spec, params=params)
        console.print(f"[green]{added.model.name}[/] is declared; it starts on its first request "
                      f"(or `llamadock load {added.model.name}`).")
        return 0
    result: dict = {}

    def post() -> None:
        try:
            result["ok"] = api.get(Added, "POST", "/admin/models", admin=True, json=spec, params=params)
        except CallFailed as exc:
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
    added: Added = result["ok"]
    if added.stopped:
        console.print(f"Stopped to make room: {', '.join(added.stopped)} (they start again on their next request).")
    console.print(f"[green]{added.model.name}[/] is {added.model.state} "
                  f"({time.monotonic() - started:.1f} s). Send requests with model=\"{added.model.name}\".")
    return 0


def cmd_edit(api: Api, console: Console, args: argparse.Namespace) -> int:
    changes = {**unset_fields(args), **spec_values(args)}
    if not changes:
        console.print("Nothing to change: give a field, e.g. --ttl 600 (or --unset image).")
        return 2
    with console.status(f"Changing {args.name}…"):
        model = api.get(ModelStatus, "PATCH", f"/admin/models/{args.name}", admin=True, json=changes)
    console.print(f"{model.name}: {', '.join(sorted(changes))} changed; it is {model.state}.")
    return 0


def _last_log_line(api: Api, name: str) -> str:
    try:
        text = "".join(api.stream_text(f"/admin/models/{name}/logs", admin=True, params={"tail": 1}))
    except CallFailed:
        return ""
    return text.strip().split("\n")[-1].strip() if text.strip() else ""


def cmd_rm(api: Api, console: Console, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/admin/models/{args.name}", admin=True)
    console.print(f"Removed {args.name}.")
    return 0


def cmd_restart(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status(f"Restarting {args.name}…"):
        model = api.get(ModelStatus, "POST", f"/admin/models/{args.name}/restart", admin=True)
    console.print(f"{model.name} is {model.state}.")
    return 0


def cmd_load(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status(f"Loading {args.name}…"):
        loaded = api.get(Loaded, "POST", f"/admin/models/{args.name}/load", admin=True)
    console.print(f"{loaded.model} is {loaded.state}.")
    return 0


def cmd_unload(api: Api, console: Console, args: argparse.Namespace) -> int:
    if args.name:
        with console.status(f"Unloading {args.name}…"):
            unloaded = api.get(Unloaded, "POST", f"/admin/models/{args.name}/unload", admin=True)
        console.print(f"{unloaded.model}: {unloaded.result}.")
        return 0
    with console.status("Unloading every idle model…"):
        idle = api.get(UnloadedIdle, "POST", "/admin/unload", admin=True)
    console.print(f"Unloaded: {', '.join(idle.unloaded) or 'nothing'}."
                  + (f" Busy, left running: {', '.join(idle.busy)}." if idle.busy else ""))
    return 0


def cmd_reconcile(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status("Reconciling with config/models.yaml…"):
        report = api.get(ReconcileReport, "POST", "/admin/reconcile", admin=True)
    for key, names in (("started", report.started), ("recreated", report.recreated), ("removed", report.removed),
                       ("unchanged", report.unchanged)):
        if names:
            console.print(f"{key}: {', '.join(names)}")
    for name, reason in report.failed.items():
        console.print(f"[red]failed: {name}: {reason}[/]")
    return 1 if report.failed else 0


def cmd_logs(api: Api, console: Console, args: argparse.Namespace) -> int:
    for text in api.stream_text(f"/admin/models/{args.name}/logs", admin=True,
                                params={"tail": args.tail, "follow": str(args.follow).lower()}):
        console.out(text, end="", highlight=False)
    return 0


def cmd_gpu(api: Api, console: Console, args: argparse.Namespace) -> int:
    console.print(gpu_view(api.get(GpuStatus, "GET", "/gpu")))
    return 0


def cmd_status(api: Api, console: Console, args: argparse.Namespace) -> int:
    cmd_models(api, console, args)
    return cmd_gpu(api, console, args)


def cmd_llama_image(api: Api, console: Console, args: argparse.Namespace) -> int:
    images = api.get(LlamaImages, "GET", "/admin/llama/image", admin=True)
    where = "config/models.yaml defaults" if images.from_catalog else "LLAMADOCK_LLAMA_IMAGE_CPU / _GPU"
    console.print(f"llama-server image: {images.image} (from {where})"
                  + (f"; previous: {images.previous}" if images.previous else ""))
    return 0


def cmd_llama_upgrade(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status(f"Moving the models to {args.image}, one at a time…"):
        report = api.get(UpgradeReport, "POST", "/admin/llama/upgrade", admin=True, json={"image": args.image})
    return _upgrade_report(console, report)


def cmd_llama_rollback(api: Api, console: Console, args: argparse.Namespace) -> int:
    with console.status("Moving the models back to the previous image…"):
        report = api.get(UpgradeReport, "POST", "/admin/llama/rollback", admin=True)
    return _upgrade_report(console, report)


def _upgrade_report(console: Console, report: UpgradeReport) -> int:
    console.print(f"llama-server image: {report.image}" + (f" (was {report.previous})" if report.previous else ""))
    for label, names in (("moved, checked to answer", report.moved), ("not running, move at their next start",
                         report.later), ("own image, left as they are", report.own_image)):
        if names:
            console.print(f"{label}: {', '.join(names)}")
    for failed in report.failed:
        console.print(f"[red]{failed.name} stays on its previous image: {failed.reason}[/]", highlight=False)
        for line in failed.log_tail[-15:]:
            console.print(f"  [dim]{line}[/]", highlight=False)
    return 1 if report.failed else 0
