"""``config/chat.yaml``: the chat's presets, default parameters and default system prompt.

Created by ``make up`` from ``config/chat.example.yaml`` (the cli container reads it at
``LLAMADOCK_CHAT_CONFIG``). No file: the built-in presets and no system prompt. A file that does
not read (bad YAML, an unknown key, a parameter out of range) is not half-applied: the chat starts
with the built-in defaults and says why, in one sentence.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .params import Params, ParamsError, params_from_mapping
from .presets import CLEAR_WORDS, SYSTEM_PRESETS

PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class ChatConfigError(ValueError):
    pass


class ChatFile(BaseModel):
    """The file as written."""
    model_config = ConfigDict(extra="forbid")

    presets: dict[str, str] | None = None  # name -> system prompt; replaces the built-in set
    system: str = ""  # a preset's name, or a prompt's text; "" (or off): none
    params: dict[str, float | int | str | None] | None = None

    @field_validator("presets")
    @classmethod
    def _names(cls, presets: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (presets or {}).items():
            if not PRESET_NAME.fullmatch(name) or name in CLEAR_WORDS:
                raise ValueError(f"'{name}' is not a preset name: lowercase letters, digits, '-' or '_' "
                                 f"(and not {', '.join(CLEAR_WORDS)})")
            if not text.strip():
                raise ValueError(f"preset '{name}' is empty")
        return presets


@dataclass(frozen=True)
class ChatDefaults:
    presets: dict[str, str] = field(default_factory=lambda: dict(SYSTEM_PRESETS))
    system: str = ""
    params: Params = field(default_factory=Params)
    problem: str | None = None  # why the file was not used


def parse_chat_config(text: str) -> ChatDefaults:
    """The defaults ``text`` declares; ChatConfigError naming the line or the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ChatConfigError(f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return ChatDefaults()
    if not isinstance(data, dict):
        raise ChatConfigError("not a mapping of presets, system and params")
    if data.get("system") is False or data.get("system") is None and "system" in data:
        data = {**data, "system": ""}  # YAML reads `system: off` (or no value) as false / null
    try:
        parsed = ChatFile.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", ())) or "the file"
        raise ChatConfigError(f"{where}: {problem['msg'].removeprefix('Value error, ')}") from None
    presets = dict(parsed.presets) if parsed.presets is not None else dict(SYSTEM_PRESETS)
    system = parsed.system.strip()
    if system.lower() in CLEAR_WORDS:
        system = ""
    elif system.lower() in presets:
        system = presets[system.lower()]
    elif system and " " not in system:
        raise ChatConfigError(f"system: no preset named '{system}' (presets: {', '.join(presets)})")
    try:
        params = params_from_mapping(parsed.params)
    except ParamsError as exc:
        raise ChatConfigError(f"params: {str(exc).rstrip('.')}") from None
    return ChatDefaults(presets=presets, system=system, params=params)


def default_path() -> Path:
    return Path(os.environ.get("LLAMADOCK_CHAT_CONFIG") or "config/chat.yaml")


def load_chat_config(path: Path) -> ChatDefaults:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ChatDefaults()
    except (OSError, UnicodeDecodeError) as exc:
        return ChatDefaults(problem=f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}): "
                                    "using the built-in presets and defaults.")
    try:
        return parse_chat_config(text)
    except ChatConfigError as exc:
        return ChatDefaults(problem=f"{path} was not used ({exc}): using the built-in presets and defaults.")
