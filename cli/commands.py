"""What a line typed into the chat means: a message to send, or a /command.

``parse`` is pure: it validates arguments (session names, parameters, presets) and
returns one small dataclass per command, or ``Invalid`` with the sentence to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from .params import LIMITS, ParamsError, parse_assignments
from .presets import CLEAR_WORDS, SYSTEM_PRESETS
from .sessions import SessionError, validate_name


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Nothing:
    pass


@dataclass(frozen=True)
class Invalid:
    message: str


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class ListModels:
    pass


@dataclass(frozen=True)
class UseModel:
    name: str


@dataclass(frozen=True)
class ShowSystem:
    pass


@dataclass(frozen=True)
class SetSystem:
    text: str  # "" removes the system prompt
    preset: str | None = None


@dataclass(frozen=True)
class ShowParams:
    pass


@dataclass(frozen=True)
class SetParams:
    changes: Mapping[str, float | int | None] = field(default_factory=dict)
    reset: bool = False


@dataclass(frozen=True)
class Save:
    name: str | None = None


@dataclass(frozen=True)
class Load:
    name: str | None = None  # None: the most recently saved session


@dataclass(frozen=True)
class ListSessions:
    pass


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Status:
    pass


Command = Union[Say, Nothing, Invalid, Quit, Help, ListModels, UseModel, ShowSystem, SetSystem, ShowParams,
                SetParams, Save, Load, ListSessions, Clear, Status]


@dataclass(frozen=True)
class CommandHelp:
    usage: str
    summary: str


HELP: dict[str, CommandHelp] = {
    "models": CommandHelp("/models", "list the gateway's models and their state"),
    "model": CommandHelp("/model NAME", "switch to another model (the conversation is kept)"),
    "system": CommandHelp("/system [PRESET | TEXT | off]",
                          "show or set the system prompt; presets: {presets} (config/chat.yaml)"),
    "params": CommandHelp("/params [name=value …| reset]",
                          "show or set temperature, top_p, max_tokens, repeat_penalty, seed (name=default unsets)"),
    "save": CommandHelp("/save [NAME]", "save the session (default: its current name, or a new one)"),
    "load": CommandHelp("/load [NAME]", "load a saved session (default: the latest)"),
    "sessions": CommandHelp("/sessions", "list saved sessions"),
    "clear": CommandHelp("/clear", "forget the conversation (system prompt and params stay)"),
    "status": CommandHelp("/status", "models with state and VRAM, GPU memory, utilization, temperature"),
    "help": CommandHelp("/help", "this list"),
    "quit": CommandHelp("/quit", "leave (the session is saved); Ctrl-C twice or Ctrl-D too"),
}
ALIASES = {"exit": "quit", "q": "quit", "bye": "quit", "?": "help", "h": "help", "session": "sessions"}
NO_ARGUMENT = {"models": ListModels(), "sessions": ListSessions(), "clear": Clear(), "status": Status(),
               "help": Help(), "quit": Quit()}


def parse(line: str, presets: Mapping[str, str] = SYSTEM_PRESETS) -> Command:
    text = line.strip()
    if not text:
        return Nothing()
    if text.startswith("//"):
        return Say(text[1:])  # "//etc" sends "/etc"
    if not text.startswith("/"):
        return Say(text)
    word, _, rest = text[1:].partition(" ")
    name, rest = ALIASES.get(word.lower(), word.lower()), rest.strip()
    if name in NO_ARGUMENT:
        return Invalid(f"/{name} takes no arguments.") if rest else NO_ARGUMENT[name]
    if name == "model":
        if not rest:
            return ListModels()
        return Invalid("Give one model name: /model NAME.") if " " in rest else UseModel(rest)
    if name == "system":
        return _system(rest, presets)
    if name == "params":
        return _params(rest)
    if name in ("save", "load"):
        if " " in rest:
            return Invalid(f"Session names have no spaces: /{name} NAME.")
        try:
            session = validate_name(rest) if rest else None
        except SessionError as exc:
            return Invalid(str(exc))
        return Save(session) if name == "save" else Load(session)
    return Invalid(f"Unknown command /{word}: /help lists the commands (start a line with // to send a '/').")


def _system(rest: str, presets: Mapping[str, str]) -> Command:
    if not rest:
        return ShowSystem()
    if rest.lower() in CLEAR_WORDS:
        return SetSystem("")
    if rest.lower() in presets:
        return SetSystem(presets[rest.lower()], rest.lower())
    if " " not in rest:
        return Invalid(f"No preset named '{rest}': choose {', '.join(presets)}, "
                       "or write your own prompt, e.g. /system You are a patient teacher.")
    return SetSystem(rest)


def _params(rest: str) -> Command:
    if not rest:
        return ShowParams()
    if rest.lower() == "reset":
        return SetParams(reset=True)
    try:
        return SetParams(parse_assignments(rest))
    except ParamsError as exc:
        return Invalid(str(exc))


def completions(line: str, models: list[str], sessions: list[str],
                presets: Mapping[str, str] = SYSTEM_PRESETS) -> list[str]:
    """Tab completions for the whole line typed so far: command names, then their argument."""
    if not line.startswith("/"):
        return []
    if " " not in line:
        names = [f"/{name}" for name in HELP] + [f"/{alias}" for alias in ("exit",)]
        return sorted(n + ("" if n[1:] in NO_ARGUMENT or n == "/exit" else " ")
                      for n in names if n.startswith(line))
    word, _, arg = line[1:].partition(" ")
    word = ALIASES.get(word.lower(), word.lower())
    choices = {"model": models, "load": sessions, "save": sessions, "system": [*presets, "off"],
               "params": [f"{name}=" for name in LIMITS] + ["reset"]}.get(word, [])
    last = arg.rsplit(" ", 1)[-1]
    return [c for c in choices if c.startswith(last)]
