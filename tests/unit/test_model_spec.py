"""The model spec: what is accepted, what is refused and why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract.spec import ModelSpec, source_from_text


def spec(**kw) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "model": "m.gguf", **kw})


def test_minimal_file_spec_and_defaults():
    s = spec()
    assert (s.ctx_size, s.parallel, s.gpu_layers, s.gpus) == (4096, 1, "all", "all")
    assert s.declared() == {"model": "m.gguf"}


@pytest.mark.parametrize("path", ["../x.gguf", "/etc/passwd", "a/../../x.gguf", "..", "a\\b.gguf", " x.gguf", ""])
def test_paths_must_stay_inside_models(path):
    with pytest.raises(ValidationError, match="models/|non-empty"):
        spec(model=path)


def test_path_is_normalised():
    assert spec(model="sub/./x.gguf").model == "sub/x.gguf"
    assert spec(model="a/../x.gguf").model == "x.gguf"


@pytest.mark.parametrize("fields", [{}, {"model": "a.gguf", "hf": "o/r"}])
def test_exactly_one_source(fields):
    with pytest.raises(ValidationError, match="exactly one source"):
        ModelSpec.model_validate({"name": "m", **fields})


@pytest.mark.parametrize("name", ["Upper", "-x", "a b", "a/b", "x" * 64, ""])
def test_bad_names(name):
    with pytest.raises(ValidationError):
        spec(name=name)


@pytest.mark.parametrize("args", [["--port", "1"], ["--host=0.0.0.0"], ["-m", "x"], ["-c", "8"], ["--alias", "x"]])
def test_managed_flags_refused_in_args(args):
    with pytest.raises(ValidationError, match="managed by llamadock"):
        spec(args=args)


def test_free_args_pass():
    assert spec(args=["--flash-attn", "on", "--jinja"]).args == ("--flash-attn", "on", "--jinja")


@pytest.mark.parametrize("bad", [{"ctx_size": -1}, {"parallel": 0}, {"gpu_layers": -2}, {"gpus": []},
                                 {"gpus": [0, 0]}, {"hf": "not a repo", "model": None}, {"unknown": 1},
                                 {"aliases": ["m"]}])
def test_invalid_values(bad):
    with pytest.raises(ValidationError):
        spec(**bad)


def test_digest_ignores_spelling_but_not_meaning():
    assert spec(ctx_size=4096).digest() == spec().digest()
    assert spec(ctx_size=8192).digest() != spec().digest()


@pytest.mark.parametrize("text, expected", [
    ("x.gguf", {"model": "x.gguf"}),
    ("sub/x.GGUF", {"model": "sub/x.GGUF"}),
    ("ggml-org/gemma-3-1b-it-GGUF:Q4_K_M", {"hf": "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"}),
    ("hf://o/r", {"hf": "o/r"}),
    ("hf:o/r:Q8_0", {"hf": "o/r:Q8_0"}),
    ("https://huggingface.co/o/r", {"hf": "o/r"}),
])
def test_source_from_text(text, expected):
    assert source_from_text(text) == expected
