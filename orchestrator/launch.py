"""Spec + host + placement -> what llama-server will be given: one description, read once.

The command line (``argv``) and the memory estimate both read a ``Launch``, so a flag in a
spec's ``args`` that changes what llama-server allocates (``-ctk``, ``-ub``, ``-fa``, ...) is
parsed here and nowhere else. Pure: no I/O, no Docker; where models/ is seen inside the
runtime is the backend's fact, passed to ``argv``.

The spec's ``args`` stay on the command line as the user wrote them (short or long form,
``--flag=value``): rewriting them would change every such container's hash, and so recreate
it, and a bare ``-fa`` must stay bare for the older images that take no value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from contract.placement import Placement
from contract.spec import ModelSpec

ALL_LAYERS = 999  # --n-gpu-layers for "all": above any model's layer count (llama.cpp caps it)
DEFAULT_CACHE_TYPE = "f16"  # llama.cpp's defaults (common.h)
DEFAULT_BATCH = 2048
DEFAULT_UBATCH = 512

FlashAttn = Literal["on", "off", "auto"]

# Flags in a spec's args that shape memory, every spelling llama-server accepts (common/arg.cpp).
# They are read here and passed on untouched.
READ_FLAGS: dict[str, str] = {
    "-ctk": "cache_type_k", "--cache-type-k": "cache_type_k",
    "-ctv": "cache_type_v", "--cache-type-v": "cache_type_v",
    "-b": "batch_size", "--batch-size": "batch_size",
    "-ub": "ubatch_size", "--ubatch-size": "ubatch_size",
    "-fa": "flash_attn", "--flash-attn": "flash_attn",
    "-sm": "split_mode", "--split-mode": "split_mode",
    "-ts": "tensor_split", "--tensor-split": "tensor_split",
}
# Flags llamadock writes itself from the spec (contract/spec.py refuses them in args).
OWN_FLAGS: dict[str, str] = {
    "-a": "alias", "--alias": "alias",
    "-m": "model", "--model": "model",
    "-hf": "hf_repo", "-hfr": "hf_repo", "--hf-repo": "hf_repo",
    "-mm": "mmproj", "--mmproj": "mmproj",
    "-c": "ctx_size", "--ctx-size": "ctx_size",
    "-ngl": "gpu_layers", "--gpu-layers": "gpu_layers", "--n-gpu-layers": "gpu_layers",
    "-np": "parallel", "--parallel": "parallel",
    "--slot-save-path": "slot_save_path",
}
# Prometheus metrics and the slots view feed llamadock's status and scheduling; --slots ends
# llamadock's own part of the command line.
ALWAYS = ("--metrics", "--slots")
# Before llama-server's flash attention took a value, a bare -fa meant on.
OPTIONAL_VALUE = frozenset({"flash_attn"})
TRUTHY = frozenset({"on", "1", "true", "enabled"})
FALSEY = frozenset({"off", "0", "false", "disabled"})


@dataclass(frozen=True)
class Launch:
    """What one model's llama-server runs with. Build it with ``describe_launch``."""

    alias: str
    model: str | None  # GGUF file relative to models/, or None for a Hugging Face source
    hf_repo: str | None
    mmproj: str | None  # relative to models/
    ctx_size: int  # 0: the model's own (n_ctx_train per slot)
    parallel: int
    gpu_layers: int  # resolved: 0 without a GPU, ALL_LAYERS for "all"
    cache_type_k: str = DEFAULT_CACHE_TYPE
    cache_type_v: str = DEFAULT_CACHE_TYPE
    batch_size: int = DEFAULT_BATCH
    ubatch_size: int = DEFAULT_UBATCH
    flash_attn: FlashAttn = "auto"
    split_mode: str | None = None  # None: llama.cpp's default ("layer")
    tensor_split: tuple[float, ...] | None = None
    # After llamadock's own flags, verbatim: the spec's args, then the placement's split.
    args: tuple[str, ...] = ()
    # Values llama-server will refuse at start (it reports them; the estimate cannot size them).
    invalid: tuple[str, ...] = ()

    def argv(self, *, models_dir: str, kv_dir: str | None = None) -> list[str]:
        """llama-server's arguments, ``models_dir`` being where models/ is seen by the server;
        ``kv_dir``: where it saves and restores slots (the gateway's KV cache keeper), None: nowhere."""
        cmd = ["--alias", self.alias]
        cmd += ["--model", f"{models_dir}/{self.model}"] if self.model is not None else ["--hf-repo", self.hf_repo]
        if self.mmproj is not None:
            cmd += ["--mmproj", f"{models_dir}/{self.mmproj}"]
        cmd += ["--ctx-size", str(self.ctx_size), "--n-gpu-layers", str(self.gpu_layers),
                "--parallel", str(self.parallel)]
        if kv_dir is not None:
            cmd += ["--slot-save-path", kv_dir]
        return cmd + list(ALWAYS) + list(self.args)


def describe_launch(spec: ModelSpec, *, gpu: bool, placement: Placement | None = None) -> Launch:
    """The launch of ``spec`` on a host with (``gpu``) or without a GPU; ``placement``: the GPUs
    the scheduler chose (ignored without a GPU), which adds the layer split when there are several."""
    args = tuple(spec.args)
    if gpu and placement is not None and len(placement.gpus) > 1:
        split = placement.tensor_split or (1,) * len(placement.gpus)
        # After the spec's args: llama-server takes the last value, so the placement wins.
        args += ("--split-mode", "layer", "--tensor-split", ",".join(str(s) for s in split))
    layers = 0 if not gpu else (ALL_LAYERS if spec.gpu_layers == "all" else spec.gpu_layers)
    return Launch(alias=spec.name, model=spec.model, hf_repo=spec.hf, mmproj=spec.mmproj, ctx_size=spec.ctx_size,
                  parallel=spec.parallel, gpu_layers=layers, args=args, **_read_args(args))


def read_argv(argv: Sequence[str], *, models_dir: str) -> Launch:
    """The ``Launch`` an ``argv()`` describes (``--host``/``--port`` before it allowed): the inverse
    of ``Launch.argv``, for reading a server's command line back. ValueError when it is not one."""
    argv = list(argv)
    if "--slots" not in argv:
        raise ValueError("not a llamadock launch: no --slots")
    end = argv.index("--slots") + 1
    own, rest = _scan(argv[:end], {**OWN_FLAGS, "--host": "host", "--port": "port"})
    if [a for a in rest if a not in ALWAYS]:
        raise ValueError(f"unknown flags before --slots: {rest}")
    prefix = f"{models_dir}/"

    def in_models(key: str) -> str | None:
        path = own.get(key)
        if path is not None and not path.startswith(prefix):
            raise ValueError(f"--{key} {path} is not under {models_dir}")
        return None if path is None else path[len(prefix):]

    layers = own.get("gpu_layers", "0")
    args = tuple(argv[end:])
    return Launch(alias=own["alias"], model=in_models("model"), hf_repo=own.get("hf_repo"), mmproj=in_models("mmproj"),
                  ctx_size=int(own["ctx_size"]), parallel=int(own["parallel"]),
                  gpu_layers=ALL_LAYERS if layers == "all" else int(layers), args=args, **_read_args(args))


def _scan(tokens: Sequence[str], flags: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(field -> raw value, the other tokens): ``--flag v`` or ``--flag=v``; the last one wins, as in
    llama.cpp, which also reads ``_`` as ``-`` in long flags. A flag missing its value is skipped."""
    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, value = token.partition("=")
        if flag.startswith("--"):
            flag = flag.replace("_", "-")
        key = flags.get(flag)
        if key is None:
            rest.append(token)
            i += 1
            continue
        i += 1
        if not eq:
            if key in OPTIONAL_VALUE and (i >= len(tokens) or tokens[i].startswith("-")):
                value = "on"
            elif i >= len(tokens):
                continue  # llama-server refuses this; its message is the better one
            else:
                value, i = tokens[i], i + 1
        values[key] = value
    return values, rest


def _read_args(args: Sequence[str]) -> dict:
    """The memory-shaping fields of a ``Launch`` from the arguments after llamadock's own."""
    raw, _ = _scan(args, READ_FLAGS)
    out: dict = {}
    invalid: list[str] = []
    for key in ("cache_type_k", "cache_type_v", "split_mode"):
        if key in raw:
            out[key] = raw[key]  # as given: the estimate knows which cache types exist
    for key, flag in (("batch_size", "--batch-size"), ("ubatch_size", "--ubatch-size")):
        if raw.get(key):
            try:
                out[key] = int(raw[key])
            except ValueError:
                invalid.append(f"{flag} must be a number, got {raw[key]!r}")
                continue
            if out[key] < 1:
                invalid.append(f"{flag} must be positive, got {out[key]}")
    if "flash_attn" in raw:
        mode = raw["flash_attn"].lower()
        out["flash_attn"] = "on" if mode in TRUTHY else "off" if mode in FALSEY else "auto"
    if raw.get("tensor_split"):
        try:
            out["tensor_split"] = tuple(float(s) for s in re.split(r"[,/]+", raw["tensor_split"]) if s)
        except ValueError:
            invalid.append(f"--tensor-split must be numbers, got {raw['tensor_split']!r}")
    return {**out, "invalid": tuple(invalid)}

