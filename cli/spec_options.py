"""The command-line options of `llamadock models add` and `models edit`, made from ``ModelSpec``
itself (contract/spec.py): one option per field, so a field added to the spec is an option at once
(tests/unit/test_spec_options.py checks it). Values are turned into the field's type where the
text says it plainly (``8192``, ``true``, ``0,1``); the orchestrator judges the rest, and its 400
names the field.

    --ctx-size 8192  --pinned  --pinned false  --ttl 600  --gpus 0,1  --gpus all
    --aliases a,b (or --alias a --alias b)  --args '--flash-attn on'  --memory 6GiB
"""

from __future__ import annotations

import argparse
import shlex
import types
import typing
from typing import Any

from contract.spec import ModelSpec

# The source is the positional argument (`x.gguf` or `owner/repo[:quant]`), and the name too.
NOT_OPTIONS = ("name", "model", "hf")
# Spellings kept from before the options were generated, for the same fields.
EXTRA_SPELLINGS = {"aliases": ("--alias",)}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def option_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def spec_fields() -> list[str]:
    return [f for f in ModelSpec.model_fields if f not in NOT_OPTIONS]


def add_spec_options(parser: argparse.ArgumentParser, *, unset: bool = False) -> None:
    group = parser.add_argument_group("model spec (config/models.yaml fields)")
    for field in spec_fields():
        info = ModelSpec.model_fields[field]
        kind = _kind(info.annotation)
        flags = (option_of(field), *EXTRA_SPELLINGS.get(field, ()))
        text = (info.description or "").replace("%", "%%")
        if kind is bool:  # --pinned, or --pinned false (what `make add PINNED=1` passes)
            group.add_argument(*flags, dest=f"spec_{field}", nargs="?", const="true", metavar="true|false",
                               help=text)
        elif kind is tuple:  # repeat it, or give a comma-separated list (args: one shell-quoted string)
            group.add_argument(*flags, dest=f"spec_{field}", action="append", metavar="VALUE", help=text)
        else:
            group.add_argument(*flags, dest=f"spec_{field}", metavar="VALUE", help=text)
    if unset:
        parser.add_argument("--unset", action="append", default=[], metavar="FIELD",
                            help="Put a field back to its default (repeat, or comma-separate).")


def spec_values(args: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line, as JSON values for the spec; an empty value
    (``--image=``, `make edit IMAGE=`) is None: the field's default."""
    values: dict[str, Any] = {}
    for field in spec_fields():
        raw = getattr(args, f"spec_{field}", None)
        if raw is not None:
            empty = raw == "" or (isinstance(raw, list) and all(r == "" for r in raw))
            values[field] = None if empty else convert(field, raw)
    return values


def unset_fields(args: argparse.Namespace) -> dict[str, None]:
    return {name.strip().replace("-", "_"): None for value in args.unset for name in value.split(",") if name.strip()}


def convert(field: str, raw: Any) -> Any:
    """``raw`` (a string, or the strings of a repeated option) as the field's JSON value; text that
    does not read as its type is passed on as given, for the orchestrator to refuse by name."""
    annotation = ModelSpec.model_fields[field].annotation
    kind = _kind(annotation)
    if kind is tuple:
        if field == "args":
            return [token for text in raw for token in shlex.split(text)]
        items = [item.strip() for text in raw for item in text.split(",") if item.strip()]
        if field == "gpus":
            return "all" if items == ["all"] else [int(i) if i.isdigit() else i for i in items]
        return items
    text = raw.strip()
    if kind is bool:
        return True if text.lower() in TRUE else False if text.lower() in FALSE else text
    if kind is int:
        return int(text) if _is_int(text) else text
    if kind is float:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _kind(annotation: Any) -> type:
    """The field's type that decides how its text is read: bool, int, float, tuple, else str."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    origins = {typing.get_origin(a) or a for a in args}
    for kind in (bool, tuple, int, float):
        if kind in origins:
            return kind
    return str
