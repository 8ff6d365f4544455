"""Checks on the disk before a model container is created: the files a spec names
exist inside models/ and are GGUF. Failing here costs nothing; failing inside a
container costs a pull, a start and a log dig."""

from __future__ import annotations

from pathlib import Path

from contract.spec import ModelSpec

GGUF_MAGIC = b"GGUF"


class SourceError(ValueError):
    """A spec names a file that cannot be served; the message says which and why."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check_model_file(models_dir: Path, relative: str, param: str) -> Path:
    root = models_dir.resolve()
    path = (root / relative).resolve()
    # resolve() follows symlinks: a link inside models/ pointing elsewhere is refused too.
    if not path.is_relative_to(root):
        raise SourceError(f"{param} {relative!r} points outside models/; put the file (not a link out) in models/.", param)
    if not path.exists():
        raise SourceError(f"{param} {relative!r} does not exist in models/ ({_nearby(root, relative)}).", param)
    if not path.is_file():
        raise SourceError(f"{param} {relative!r} is not a file.", param)
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise SourceError(f"{param} {relative!r} cannot be read: {exc.strerror}.", param) from None
    if magic != GGUF_MAGIC:
        raise SourceError(f"{param} {relative!r} is not a GGUF file (it does not start with 'GGUF').", param)
    return path


def _nearby(root: Path, relative: str) -> str:
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.gguf")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not names:
        return "models/ has no .gguf file"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"available: {shown}"


def check_sources(spec: ModelSpec, models_dir: Path) -> None:
    """Raise SourceError unless every file the spec names is a GGUF inside models/."""
    if spec.model is not None:
        check_model_file(models_dir, spec.model, "model")
    if spec.mmproj is not None:
        check_model_file(models_dir, spec.mmproj, "mmproj")
