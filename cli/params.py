"""Sampling parameters a chat sends with each request, and their validation.

Unset (None) means "the model server's default": only what the user set is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping


class ParamsError(ValueError):
    pass


@dataclass(frozen=True)
class Limit:
    kind: type
    low: float
    high: float
    meaning: str


LIMITS: dict[str, Limit] = {
    "temperature": Limit(float, 0, 2, "randomness; 0 always picks the likeliest token"),
    "top_p": Limit(float, 0, 1, "sample only from the likeliest tokens that make up this probability"),
    "max_tokens": Limit(int, 1, 1_000_000, "longest answer, in tokens"),
    "repeat_penalty": Limit(float, 0, 2, "above 1 discourages repeating recent tokens"),
    "seed": Limit(int, -1, 2**32 - 1, "fixed seed for reproducible answers; -1 is random"),
}
ALIASES = {"temp": "temperature", "repetition_penalty": "repeat_penalty", "max": "max_tokens"}
DEFAULT_WORDS = ("default", "unset", "none")


@dataclass(frozen=True)
class Params:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None

    def body(self) -> dict:
        """The request fields to send: only the parameters that are set."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    def updated(self, changes: Mapping[str, float | int | None]) -> "Params":
        return dataclasses.replace(self, **changes)


def parameter_name(text: str) -> str:
    name = text.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in LIMITS:
        raise ParamsError(f"Unknown parameter '{text}': choose from {', '.join(LIMITS)}.")
    return name


def parse_value(name: str, text: object) -> float | int | None:
    """``text`` (a string, or a JSON number from a saved session) checked against ``name``'s limits."""
    limit = LIMITS[name]
    if text is None or isinstance(text, str) and text.strip().lower() in DEFAULT_WORDS:
        return None
    what = "a whole number" if limit.kind is int else "a number"
    try:
        if isinstance(text, bool):
            raise ValueError
        value = limit.kind(text) if isinstance(text, (int, float)) else limit.kind(str(text).strip())
        if limit.kind is int and isinstance(text, float) and not text.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ParamsError(f"{name} must be {what} from {_number(limit.low)} to {_number(limit.high)}, "
                          f"not '{text}'.") from None
    if not limit.low <= value <= limit.high or value != value:  # value != value: NaN
        raise ParamsError(f"{name} must be from {_number(limit.low)} to {_number(limit.high)}, not {text}.")
    return value


def parse_assignments(text: str) -> dict[str, float | int | None]:
    """``"temperature=0.2 seed=42"`` -> ``{"temperature": 0.2, "seed": 42}``; ``key=default`` unsets."""
    changes: dict[str, float | int | None] = {}
    for word in text.split():
        key, equals, value = word.partition("=")
        if not equals or not key or not value:
            raise ParamsError(f"Write parameters as name=value (e.g. temperature=0.7), not '{word}'.")
        name = parameter_name(key)
        changes[name] = parse_value(name, value)
    if not changes:
        raise ParamsError("Give at least one name=value, e.g. /params temperature=0.7.")
    return changes


def params_from_mapping(data: object) -> Params:
    """Parameters as saved in a session file, validated like typed ones."""
    if data is None:
        return Params()
    if not isinstance(data, dict):
        raise ParamsError("params is not an object")
    return Params().updated({parameter_name(str(key)): parse_value(parameter_name(str(key)), value)
                             for key, value in data.items()})


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
