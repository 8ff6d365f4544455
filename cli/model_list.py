"""The models the gateway serves (GET /v1/models), and choosing one of them."""

from __future__ import annotations

from dataclasses import dataclass

from contract.status import ModelObject


@dataclass(frozen=True)
class ModelInfo:
    name: str
    state: str = "ready"
    reason: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.state == "ready"


def models_from_listing(entries: list[ModelObject]) -> list[ModelInfo]:
    """``/v1/models``'s ``data`` or ``/status``'s ``models``."""
    return [ModelInfo(name=m.id, state=m.state, reason=m.reason, aliases=tuple(m.aliases)) for m in entries]


def find_model(models: list[ModelInfo], name: str) -> ModelInfo | None:
    """By name, else by alias (as the gateway routes)."""
    return next((m for m in models if m.name == name), None) or \
        next((m for m in models if name in m.aliases), None)


def only_ready_model(models: list[ModelInfo]) -> ModelInfo | None:
    ready = [m for m in models if m.ready]
    return ready[0] if len(ready) == 1 else None


def pick_model(models: list[ModelInfo], answer: str) -> ModelInfo | str:
    """The model an answer to the picker names (its number in the list, or a name); else why not."""
    answer = answer.strip()
    if answer.isdigit():
        number = int(answer)
        if 1 <= number <= len(models):
            return models[number - 1]
        return f"Pick a number from 1 to {len(models)}, or type a name."
    model = find_model(models, answer) if answer else None
    if model is None:
        return f"No model named '{answer}': pick a number from 1 to {len(models)}, or type a name."
    return model
