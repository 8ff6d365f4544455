"""Which saved KV caches a model's server may restore: one key for everything that makes a file
written by one server unreadable, or silently wrong, in another.

A slot file (llama-server's ``--slot-save-path``) holds the K and V tensors of one sequence as
that server computed them. Restored into a server that differs in any of the following, it is
refused at best (another context or cache type: another size per cell) and at worst accepted
and wrong (other weights, another RoPE base in ``args``: the same shapes, other numbers):

* the weights: the GGUF file (by its size and modification time: a file replaced under the same
  name is another model) or the Hugging Face repo and quant, and the projector;
* the cache layout: context size, slots (each slot's share of the context), K and V cache
  types, flash attention (V stored transposed or not);
* everything else in the spec's ``args`` (RoPE scaling, LoRA, overrides...): all of them, since
  telling which ones shape the cache is a guess, and a wrong guess restores garbage;
* the server itself (its image): the file format is the server's.

Left out on purpose: the GPU layers and the placement (the state is written in one format
wherever the layers ran). Pure; the file's identity is read by the caller.
"""

from __future__ import annotations

import hashlib
import json

from .launch import Launch

KEY_LENGTH = 16  # hex characters: part of every cache file's name


def kv_key(launch: Launch, *, image: str, source: str) -> str:
    """The key of ``launch`` run from ``image``; ``source``: the weights' identity (``source_identity``)."""
    facts = {
        "source": source, "hf": launch.hf_repo, "mmproj": launch.mmproj,
        "ctx_size": launch.ctx_size, "parallel": launch.parallel,
        "cache_type_k": launch.cache_type_k, "cache_type_v": launch.cache_type_v,
        "flash_attn": launch.flash_attn, "args": list(launch.args), "image": image,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


def source_identity(model: str | None, size: int | None, mtime_ns: int | None, hf: str | None) -> str:
    """A GGUF file by name, size and modification time (a missing file has no identity beyond its
    name: a server cannot run from it anyway), or a Hugging Face source by its repo and quant."""
    if model is None:
        return f"hf:{hf}"
    return f"file:{model}:{size}:{mtime_ns}"
