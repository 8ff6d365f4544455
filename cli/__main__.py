"""``python -m cli`` (``llamadock``): the terminal chat and the admin commands.

    llamadock chat [--model NAME]             chat (asks which model when not told)
    llamadock models                          table of models
    llamadock models add NAME SOURCE [opts]   SOURCE: file in models/ or owner/repo[:quant]; every spec field
    llamadock models edit NAME [opts]        change fields (--unset FIELD: back to the default)
    llamadock models rm NAME
    llamadock models restart NAME
    llamadock models logs NAME [-f] [--tail N]
    llamadock llama [upgrade IMAGE | rollback]   the llama-server image
    llamadock ps [-w]                         models: state, memory, CPU/GPU, slots, queue, unload
    llamadock gpu | status
"""

from __future__ import annotations

import argparse
import sys


from . import admin, chat, ps
from .api import Api, CallFailed, Connection
from .console import make_console
from .spec_options import add_spec_options


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamadock", description="Chat with, manage and inspect a llamadock stack.")
    p.add_argument("--url", help="Gateway URL (LLAMADOCK_URL; default http://127.0.0.1:8080).")
    p.add_argument("--admin-token", help="Admin token (LLAMADOCK_ADMIN_TOKEN).")
    p.add_argument("--api-key", help="API key for /v1 (LLAMADOCK_API_KEY).")
    sub = p.add_subparsers(dest="command", required=True)

    talk = sub.add_parser("chat", help="Chat with a model; /help inside lists the commands.")
    talk.add_argument("-m", "--model", help="Model name or alias (default: the only ready model, else a picker).")
    # Plain requests (/status, /models) give up after 30 s; answers stream without a limit.
    talk.set_defaults(run=chat.cmd_chat, request_timeout=30.0)

    models = sub.add_parser("models", help="List, add, remove models.")
    models.set_defaults(run=admin.cmd_models)
    msub = models.add_subparsers(dest="action")

    add = msub.add_parser("add", help="Add a model, making room as a request would, and wait until it answers.")
    add.add_argument("name")
    add.add_argument("source", help="A GGUF file in models/ (x.gguf) or a Hugging Face repo (owner/repo[:quant]).")
    add_spec_options(add)
    add.add_argument("--replace", action="store_true", help="Replace a model of that name.")
    add.add_argument("--no-start", action="store_true", help="Only write it into the catalog: it starts on its "
                     "first request.")
    add.set_defaults(run=admin.cmd_add)

    edit = msub.add_parser("edit", help="Change fields of a model's spec, e.g. --ttl 600 --pinned.")
    edit.add_argument("name")
    add_spec_options(edit, unset=True)
    edit.set_defaults(run=admin.cmd_edit)

    rm = msub.add_parser("rm", help="Stop and remove a model.")
    rm.add_argument("name")
    rm.set_defaults(run=admin.cmd_rm)

    restart = msub.add_parser("restart", help="Restart a model's server.")
    restart.add_argument("name")
    restart.set_defaults(run=admin.cmd_restart)

    logs = msub.add_parser("logs", help="A model's server log.")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=100)
    logs.set_defaults(run=admin.cmd_logs)

    reconcile = msub.add_parser("reconcile", help="Make the containers match config/models.yaml.")
    reconcile.set_defaults(run=admin.cmd_reconcile)

    llama = sub.add_parser("llama", help="The llama-server image the models run: show, upgrade, roll back.")
    llama.set_defaults(run=admin.cmd_llama_image, request_timeout=None)
    lsub = llama.add_subparsers(dest="action")
    up = lsub.add_parser("upgrade", help="Move the models to IMAGE one at a time, each checked before its old "
                         "server goes; a model that fails stays on its image.")
    up.add_argument("image")
    up.set_defaults(run=admin.cmd_llama_upgrade)
    lsub.add_parser("rollback", help="Move the models back to the previous image.").set_defaults(
        run=admin.cmd_llama_rollback)

    show = sub.add_parser("ps", help="What each model holds and does now (like `ollama ps`).")
    show.add_argument("-w", "--watch", action="store_true", help="Refresh every second until Ctrl-C.")
    show.set_defaults(run=ps.cmd_ps)

    load = sub.add_parser("load", help="Start a model (making room if needed) and wait until it answers.")
    load.add_argument("name")
    load.set_defaults(run=admin.cmd_load)

    unload = sub.add_parser("unload", help="Stop a model now if it is idle; without a name, every idle model.")
    unload.add_argument("name", nargs="?")
    unload.set_defaults(run=admin.cmd_unload)

    sub.add_parser("gpu", help="GPU memory, utilization, temperature.").set_defaults(run=admin.cmd_gpu)
    sub.add_parser("status", help="Models and GPUs.").set_defaults(run=admin.cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = make_console()
    api = Api(Connection.from_env(args.url, args.admin_token, args.api_key),
              timeout=getattr(args, "request_timeout", None))
    try:
        return args.run(api, console, args)
    except CallFailed as exc:
        console.print(f"[red]Error:[/] {exc}")
        for line in exc.log_tail[-15:]:
            console.print(f"  [dim]{line}[/]", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
