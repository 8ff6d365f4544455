"""`llamadock models add/edit` options and `make add/edit` variables come from ModelSpec: every
field has both, and the text given becomes the value the spec takes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cli.__main__ import parser
from cli.admin import spec_from_args
from cli.spec_options import NOT_OPTIONS, option_of, spec_values, unset_fields
from contract.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


def test_every_spec_field_is_an_option_of_add_and_edit():
    add = parser().parse_args(["models", "add", "x", "x.gguf"])
    edit = parser().parse_args(["models", "edit", "x"])
    for field in ModelSpec.model_fields:
        if field in NOT_OPTIONS:
            continue
        assert hasattr(add, f"spec_{field}") and hasattr(edit, f"spec_{field}"), field


def test_every_spec_field_is_a_make_variable():
    listed = re.search(r"^SPEC_VARS := (.*?)(?<!\\)$", (REPO / "Makefile").read_text(), re.M | re.S).group(1)
    variables = set(listed.replace("\\\n", " ").split())
    assert variables == {f.upper() for f in ModelSpec.model_fields if f not in NOT_OPTIONS}


def test_make_add_hands_every_given_variable_to_the_cli():
    out = subprocess.run(["make", "-n", "add", "NAME=v", "MODEL=v.gguf", "MMPROJ=p.gguf", "TTL=600", "PINNED=1",
                          "SWAP_GROUP=big", "GPUS=0,1", "GPU_LAYERS=20", "CTX=8192", "ARGS=--jinja", "NO_START=1"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if "models add" in line)
    for flag in ('--mmproj="p.gguf"', '--ttl="600"', '--pinned="1"', '--swap-group="big"', '--gpus="0,1"',
                 '--gpu-layers="20"', '--ctx-size="8192"', '--args="--jinja"', "--no-start"):
        assert flag in line, line


@pytest.mark.parametrize("argv, expected", [
    (["--ctx-size", "8192", "--parallel=2"], {"ctx_size": 8192, "parallel": 2}),
    (["--pinned"], {"pinned": True}),
    (["--pinned=false", "--preload", "1"], {"pinned": False, "preload": True}),
    (["--ttl", "600", "--min-residency=2.5"], {"ttl": 600.0, "min_residency": 2.5}),
    (["--gpus", "0,1"], {"gpus": [0, 1]}),
    (["--gpus", "all", "--gpu-layers", "all"], {"gpus": "all", "gpu_layers": "all"}),
    (["--gpu-layers", "20"], {"gpu_layers": 20}),
    (["--alias", "a,b", "--aliases", "c"], {"aliases": ["a", "b", "c"]}),
    (["--args=--flash-attn on --jinja"], {"args": ["--flash-attn", "on", "--jinja"]}),
    (["--mmproj", "p.gguf", "--swap-group", "big", "--memory", "6GiB", "--image", "llama:next"],
     {"mmproj": "p.gguf", "swap_group": "big", "memory": "6GiB", "image": "llama:next"}),
    (["--ttl", "soon"], {"ttl": "soon"}),  # passed on: the orchestrator's 400 names `ttl`
])
def test_option_text_becomes_the_fields_value(argv, expected):
    args = parser().parse_args(["models", "add", "v", "v.gguf", *argv])
    assert spec_values(args) == expected
    body = spec_from_args(args)
    assert body == {"name": "v", "model": "v.gguf", **expected}


def test_the_values_the_cli_makes_are_a_valid_spec():
    args = parser().parse_args(["models", "add", "v", "org/repo:Q4_K_M", "--ctx-size", "8192", "--pinned",
                                "--gpus", "0", "--ttl", "60", "--args", "--flash-attn on", "--memory", "6GiB",
                                "--mmproj", "p.gguf", "--swap-group", "g", "--alias", "gpt-4o-mini"])
    spec = ModelSpec.model_validate(spec_from_args(args))
    assert (spec.hf, spec.ctx_size, spec.pinned, spec.gpus, spec.ttl) == ("org/repo:Q4_K_M", 8192, True, (0,), 60)
    assert spec.args == ("--flash-attn", "on") and int(spec.memory) == 6 * 2**30


def test_edit_sends_only_the_changes_and_empty_or_unset_is_the_default():
    args = parser().parse_args(["models", "edit", "v", "--ttl", "600", "--image=", "--unset", "mmproj,swap-group"])
    assert {**unset_fields(args), **spec_values(args)} == {"ttl": 600.0, "image": None, "mmproj": None,
                                                           "swap_group": None}


def test_option_names_follow_the_field_names():
    assert option_of("swap_group") == "--swap-group" and option_of("ttl") == "--ttl"
