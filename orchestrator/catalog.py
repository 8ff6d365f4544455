"""The model catalog, config/models.yaml: read it, edit it, find GGUF files it does not declare.

Users edit the file by hand and the orchestrator edits it at runtime, so:

- errors name the file and the line, down to the offending key, so a typo is quick to fix;
- edits are surgical: adding, replacing or removing a model rewrites that model's lines only,
  and every other line (comments, order, quoting, indentation) stays byte for byte;
- we never write what we cannot read back: each rendered text is parsed again and compared
  with the specs it should hold, writes are atomic, and a file the user left broken is never
  overwritten.

    # comments the user wrote survive our edits
    models:
      qwen3-4b:
        hf: Qwen/Qwen3-4B-GGUF:Q4_K_M
        ctx_size: 8192
      tiny:
        model: tiny.gguf
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml as pyyaml
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from common.files import atomic_write
from contract.spec import ModelSpec

DEFAULT_PATH = "config/models.yaml"
MODELS_KEY = "models"
DEFAULTS_KEY = "defaults"  # stack-wide settings: the llama-server image (and the one before it)
DEFAULT_FIELDS = ("llama_image", "previous_llama_image")
# llama.cpp's split files: only the first part is given to llama-server.
MULTIPART_GGUF = re.compile(r"^.+-(?P<part>\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)
# `models:`, `models: {}`, `models: ~  # note`: a line we can turn into `models:  # note` with entries under it.
EMPTY_MODELS_LINE = re.compile(
    rf"^(?P<key>{MODELS_KEY}:)[ \t]*?(?:\{{[ \t]*\}}|null|Null|NULL|~)?(?P<comment>[ \t]+#.*)?\r?\n?$")


class CatalogError(ValueError):
    """The catalog cannot be read: where (``path``, 1-based ``line`` or None) and why (``reason``)."""

    def __init__(self, path: str, line: int | None, reason: str):
        super().__init__(path, line, reason)
        self.path, self.line, self.reason = path, line, reason

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}, line {self.line}"
        return f"{where}: {self.reason}"


def parse_catalog(text: str, path: str = DEFAULT_PATH) -> dict[str, ModelSpec]:
    """The models ``text`` declares, by name; CatalogError says where and why it is wrong."""
    root = _load(text, path)
    models = _models_mapping(root, path)
    specs: dict[str, ModelSpec] = {}
    for name, body in (models or {}).items():
        key_line = models.lc.key(name)[0] + 1
        if body is None:
            body = CommentedMap()
        if not isinstance(body, CommentedMap):
            raise CatalogError(path, key_line, f"models.{name}: expected settings such as `model: file.gguf`, "
                                               f"found {_kind(body)}")
        if "name" in body:
            raise CatalogError(path, body.lc.key("name")[0] + 1,
                               f"models.{name}.name: the model's name is its key; remove `name:`")
        try:
            spec = ModelSpec.model_validate({"name": _plain(name), **_plain(body)})
        except ValidationError as error:
            raise _located(error, name, body, key_line, path) from None
        specs[spec.name] = spec
    return specs


@dataclass(frozen=True)
class CatalogDefaults:
    """``defaults:``: the llama-server image models without their own `image` run (None: the
    stack's LLAMADOCK_LLAMA_IMAGE_CPU / _GPU), and the one before it, for a rollback."""
    llama_image: str | None = None
    previous_llama_image: str | None = None


def parse_defaults(text: str, path: str = DEFAULT_PATH) -> CatalogDefaults:
    """The catalog's ``defaults:`` (CatalogError says where and why it is wrong)."""
    root = _load(text, path)
    _models_mapping(root, path)
    body = root.get(DEFAULTS_KEY) if isinstance(root, CommentedMap) else None
    if body is None:
        return CatalogDefaults()
    line = root.lc.key(DEFAULTS_KEY)[0] + 1
    if not isinstance(body, CommentedMap):
        raise CatalogError(path, line, f"`{DEFAULTS_KEY}:` must map settings to values, found {_kind(body)}")
    values = {}
    for key, value in body.items():
        where = body.lc.key(key)[0] + 1
        if key not in DEFAULT_FIELDS:
            raise CatalogError(path, where, f"{DEFAULTS_KEY}.{key}: unknown; known: {', '.join(DEFAULT_FIELDS)}")
        if value is not None and (not isinstance(value, str) or not value or any(c.isspace() for c in value)):
            raise CatalogError(path, where, f"{DEFAULTS_KEY}.{key}: must be an image name like "
                               "ghcr.io/ggml-org/llama.cpp:server-b6000")
        values[key] = None if value is None else str(value)
    return CatalogDefaults(**values)


def load_defaults(path: Path) -> CatalogDefaults:
    return parse_defaults(_read(path), str(path))


def render_with_defaults(text: str, defaults: CatalogDefaults) -> str:
    """``text`` with its ``defaults:`` block replaced by ``defaults`` (or added above `models:`);
    every other line stays as it was."""
    specs = parse_catalog(text)
    root = _load(text, DEFAULT_PATH)
    lines = _with_final_newline(text.splitlines(keepends=True))
    block = [f"{DEFAULTS_KEY}:  # the llama-server image (`make llama-upgrade`, `make llama-rollback`)\n"]
    block += [f"  {key}: {_dump(_unambiguous(getattr(defaults, key))).splitlines()[0]}\n"
              for key in DEFAULT_FIELDS if getattr(defaults, key) is not None]
    if isinstance(root, CommentedMap) and DEFAULTS_KEY in root:
        keys = list(root)
        start = root.lc.key(DEFAULTS_KEY)[0]
        after = keys.index(DEFAULTS_KEY) + 1
        stop = root.lc.key(keys[after])[0] if after < len(keys) else len(lines)
        while stop - 1 > start and (not lines[stop - 1].strip() or lines[stop - 1].lstrip().startswith("#")
                                    and _indent(lines[stop - 1]) == 0):
            stop -= 1
        lines[start:stop] = block
    elif isinstance(root, CommentedMap) and MODELS_KEY in root:
        at = root.lc.key(MODELS_KEY)[0]
        lines[at:at] = [*block, "\n"]
    else:
        lines += block
    new_text = "".join(lines)
    if parse_catalog(new_text) != specs or parse_defaults(new_text) != defaults:
        raise AssertionError(f"rendered defaults do not read back as {defaults}:\n{new_text}")
    return new_text


STARTER = """\
# Models llamadock runs, one llama-server container each: `make add` and `make rm` edit
# this file for you (your comments stay). Every setting is described, with examples, in
# config/models.example.yaml.
models: {}
"""


def ensure_catalog(path: Path) -> bool:
    """Create the live catalog on first use: a copy of ``models.example.yaml`` beside it,
    or a starter that points to it. The live file is the user's (git ignores it); an
    existing one is never touched. True when it was created."""
    if path.exists() or path.is_symlink():
        return False
    example = path.with_name("models.example.yaml")
    try:
        text = example.read_text(encoding="utf-8")
        parse_catalog(text, str(example))  # only an example we can read is worth copying
    except (OSError, UnicodeDecodeError, CatalogError):
        text = STARTER
    save_catalog_text(path, text)
    return True


def load_catalog(path: Path) -> dict[str, ModelSpec]:
    """The models declared in the file at ``path``; none when it does not exist."""
    return parse_catalog(_read(path), str(path))


def render_with_model(text: str, spec: ModelSpec) -> str:
    """``text`` with ``spec`` added at the end of `models:`, or replacing the model of that name in place."""
    expected = parse_catalog(text) | {spec.name: spec}
    root = _load(text, DEFAULT_PATH)
    models = root.get(MODELS_KEY) if root is not None else None
    if not _is_block_with_entries(root, models):
        return _checked(_added_to_empty(root, text, spec), expected)
    lines = _with_final_newline(text.splitlines(keepends=True))
    names = list(models)
    column = models.lc.key(names[0])[1]
    entry = [" " * column + line for line in _dump(_entry(spec), _body_indent(models, names[0])).splitlines(True)]
    if spec.name in models:
        start, stop = _entry_span(lines, models, spec.name)
    else:
        start = stop = _entry_span(lines, models, names[-1])[1]
    lines[start:stop] = entry
    return _checked("".join(lines), expected)


def render_without_model(text: str, name: str) -> str:
    """``text`` without the model ``name``; KeyError when it has none by that name.

    Comment lines just above the model stay: they may well be about the models above it.
    """
    expected = parse_catalog(text)
    if name not in expected:
        raise KeyError(name)
    del expected[name]
    root = _load(text, DEFAULT_PATH)
    models = root[MODELS_KEY]
    if not _is_block_with_entries(root, models):
        del models[name]
        return _checked(_dump(root), expected)
    lines = text.splitlines(keepends=True)
    start, stop = _entry_span(lines, models, name)
    gap_above = start - 1 == root.lc.key(MODELS_KEY)[0] or not lines[start - 1].strip()
    if gap_above and stop < len(lines) and not lines[stop].strip():
        stop += 1  # one blank line where the model was, not two
    del lines[start:stop]
    return _checked("".join(lines), expected)


def save_catalog_text(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` atomically: readers see the old file or the new, never half of one.

    A symlinked catalog has what it points to replaced; the file keeps its permission bits (and
    owner, where we may); a new file gets 0o644. An OSError propagates: callers answer it as
    ``errors.catalog_not_saved``.
    """
    atomic_write(path, text)


def update_catalog(path: Path, change: Callable[[str], str]) -> dict[str, ModelSpec]:
    """Apply ``change`` (old text -> new text, e.g. ``lambda t: render_with_model(t, spec)``) to the file.

    Refuses, writing nothing, when the file as it is does not parse: a user's half-done edit is
    theirs to finish, not ours to overwrite. Returns the specs now in the file. Not locked: callers
    serialise their updates themselves.
    """
    text = _read(path)
    parse_catalog(text, str(path))
    new_text = change(text)
    specs = parse_catalog(new_text, str(path))
    save_catalog_text(path, new_text)
    return specs


def tree_stamp(root: Path) -> tuple[tuple[str, int], ...]:
    """The modification times of ``root`` and the visible directories under it: a file added, removed
    or renamed anywhere in the tree changes one of them, so the tree is walked again only then."""
    stamps = []
    for directory, subdirectories, _ in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        try:
            stamps.append((directory, os.stat(directory).st_mtime_ns))
        except OSError:
            continue
    return tuple(stamps)


def undeclared_gguf_files(models_dir: Path, specs: dict[str, ModelSpec]) -> list[str]:
    """GGUF files under ``models_dir`` that no spec uses as ``model`` or ``mmproj``: sorted paths relative to it.

    Hidden files and directories (``.cache``, partial downloads) are skipped, symlinked directories
    are not entered, and of a split model (``x-00001-of-00003.gguf``) only the first part is listed.
    """
    declared = {path for spec in specs.values() for path in (spec.model, spec.mmproj) if path}
    root = models_dir.resolve()
    found = []
    for directory, subdirectories, files in os.walk(models_dir):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in files:
            part = MULTIPART_GGUF.match(name)
            if name.startswith(".") or not name.lower().endswith(".gguf") or (part and int(part["part"]) != 1):
                continue
            file = Path(directory, name)
            if not file.is_file() or not file.resolve().is_relative_to(root):
                continue  # a broken link, or one pointing out of models/ (not there inside the container)
            relative = file.relative_to(models_dir).as_posix()
            if relative not in declared:
                found.append(relative)
    return sorted(found)


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode: keeps comments and positions, refuses duplicate keys
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long hf id or argument onto a second line
    return yaml


def _load(text: str, path: str) -> Any:
    try:
        return _yaml().load(text)
    except DuplicateKeyError as error:
        what = error.problem.split(" with value")[0].removeprefix("found ")  # 'duplicate key "tiny"'
        raise CatalogError(path, _line(error.problem_mark), what) from None
    except MarkedYAMLError as error:
        what = "; ".join(part for part in (error.context, error.problem) if part)
        raise CatalogError(path, _line(error.problem_mark or error.context_mark), f"not valid YAML: {what}") from None
    except YAMLError as error:
        raise CatalogError(path, None, f"not valid YAML: {error}") from None


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


def _models_mapping(root: Any, path: str) -> CommentedMap | None:
    if root is None:
        return None
    if not isinstance(root, CommentedMap):
        line = root.lc.line + 1 if isinstance(root, CommentedSeq) else None
        raise CatalogError(path, line, f"expected `{MODELS_KEY}:` at the top level, found {_kind(root)}")
    for key in root:
        if key not in (MODELS_KEY, DEFAULTS_KEY):
            raise CatalogError(path, root.lc.key(key)[0] + 1,
                               f"unknown top-level key {key!r}: the catalog holds only `{MODELS_KEY}:` "
                               f"and `{DEFAULTS_KEY}:`")
    models = root.get(MODELS_KEY)
    if models is not None and not isinstance(models, CommentedMap):
        raise CatalogError(path, root.lc.key(MODELS_KEY)[0] + 1,
                           f"`{MODELS_KEY}:` must map model names to their settings, found {_kind(models)}")
    return models


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as plain Python values."""
    if isinstance(node, dict):
        return {_plain(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, ScalarBoolean):
        return bool(node)
    for kind in (bool, str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


def _located(error: ValidationError, name: Any, body: CommentedMap, key_line: int, path: str) -> CatalogError:
    """The first problem pydantic found, on the line of the deepest key of its ``loc`` the file has."""
    problems = [(_deepest(body, problem["loc"], key_line), problem) for problem in error.errors()]
    (steps, line), first = problems[0]
    if first["loc"][:1] == ("name",):
        return CatalogError(path, key_line, f"models.{name}: invalid model name: {first['msg']}")
    # A union field (gpu_layers, gpus) fails once per alternative, each with the same place in the file.
    messages = dict.fromkeys(problem["msg"].removeprefix("Value error, ") for (s, _), problem in problems if s == steps)
    return CatalogError(path, line, f"{'.'.join(['models', str(name), *map(str, steps)])}: {' or '.join(messages)}")


def _deepest(node: Any, loc: tuple, line: int) -> tuple[tuple, int]:
    steps: tuple = ()
    for step in loc:
        if isinstance(node, CommentedMap) and step in node:
            line = node.lc.key(step)[0] + 1
        elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
            line = node.lc.item(step)[0] + 1
        else:
            break
        steps, node = (*steps, step), node[step]
    return steps, line


def _is_block_with_entries(root: Any, models: Any) -> bool:
    return bool(models) and not root.fa.flow_style() and not models.fa.flow_style()


def _entry_span(lines: list[str], models: CommentedMap, name: str) -> tuple[int, int]:
    """Lines [start, stop) of model ``name``: its key and all lines indented under it.

    The blank and comment lines after it that are not indented deeper than its key belong to
    what follows (the next model, or the end of the file), so they are not part of it.
    """
    names = list(models)
    start, column = models.lc.key(name)
    after = names.index(name) + 1
    stop = models.lc.key(names[after])[0] if after < len(names) else len(lines)
    while stop - 1 > start and (not lines[stop - 1].strip() or _indent(lines[stop - 1]) <= column):
        stop -= 1
    return start, stop


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _body_indent(models: CommentedMap, name: str) -> int:
    """How far the user indents a model's settings under its name (2 unless the file says otherwise)."""
    body = models[name]
    if isinstance(body, CommentedMap) and body and not body.fa.flow_style():
        return max(body.lc.key(next(iter(body)))[1] - models.lc.key(name)[1], 1)
    return 2


def _with_final_newline(lines: list[str]) -> list[str]:
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    return lines


def _entry(spec: ModelSpec) -> CommentedMap:
    """``{name: settings}`` ready to dump, lists on one line: ``args: [--flash-attn, "on"]``."""
    settings = CommentedMap()
    for key, value in spec.declared().items():
        if isinstance(value, list):
            value = CommentedSeq(_unambiguous(item) for item in value)
            value.fa.set_flow_style()
        settings[key] = _unambiguous(value)
    return CommentedMap({_unambiguous(spec.name): settings})


def _unambiguous(value: Any) -> Any:
    """Quote a string that a YAML 1.1 reader such as PyYAML would take for something else (`on`, `no`, `1_000`)."""
    if not isinstance(value, str):
        return value
    try:
        same = pyyaml.safe_load(value) == value
    except pyyaml.YAMLError:
        same = False
    return value if same else DoubleQuotedScalarString(value)


def _dump(data: Any, mapping_indent: int = 2) -> str:
    yaml = _yaml()
    yaml.indent(mapping=mapping_indent, sequence=mapping_indent + 2, offset=mapping_indent)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _added_to_empty(root: Any, text: str, spec: ModelSpec) -> str:
    """``spec`` added to a catalog with no block-style models yet: no file, ``models:``, ``models: {}``."""
    lines = _with_final_newline(text.splitlines(keepends=True))
    entry = ["  " + line for line in _dump(_entry(spec)).splitlines(True)]
    if root is None:  # nothing but comments (or `null`): keep the comments, add `models:` below
        kept = [line for line in lines if line.strip()[:1] in ("", "#")]
        return "".join([*kept, f"{MODELS_KEY}:\n", *entry])
    key_line = root.lc.key(MODELS_KEY)[0] if MODELS_KEY in root else None
    empty_value = EMPTY_MODELS_LINE.match(lines[key_line]) if key_line is not None else None
    if empty_value and not root.fa.flow_style():
        # `models: {}  # note` -> `models:  # note`, the new model right under it
        lines[key_line:key_line + 1] = [f"{empty_value['key']}{empty_value['comment'] or ''}\n", *entry]
        return "".join(lines)
    # Anything rarer (a flow mapping `models: {a: {...}}`, `{}` as the whole file): let ruamel write it all.
    if root.get(MODELS_KEY) is None:
        root[MODELS_KEY] = CommentedMap()
    root.fa.set_block_style()
    root[MODELS_KEY].fa.set_block_style()  # not `models: {tiny: {...}}`
    root[MODELS_KEY].update(_entry(spec))
    return _dump(root)


def _checked(text: str, expected: dict[str, ModelSpec]) -> str:
    """``text``, once it is sure to parse back to ``expected``: a bug here must not reach the disk."""
    try:
        actual = parse_catalog(text)
    except CatalogError as error:
        raise AssertionError(f"rendered catalog does not parse ({error}):\n{text}") from error
    if actual != expected:
        raise AssertionError(f"rendered catalog holds {sorted(actual)}, not the expected {sorted(expected)}:\n{text}")
    return text


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as error:
        raise CatalogError(str(path), None, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
