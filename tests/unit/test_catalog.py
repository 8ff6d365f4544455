"""config/models.yaml: parsing with line numbers, surgical edits that keep comments, atomic writes, stray GGUFs."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml as pyyaml

from orchestrator import catalog
from orchestrator.catalog import (
    CatalogError,
    load_catalog,
    parse_catalog,
    render_with_model,
    render_without_model,
    save_catalog_text,
    undeclared_gguf_files,
    update_catalog,
)
from contract.spec import ModelSpec

SHIPPED = """\
# Models llamadock serves. Edit by hand, or add them at runtime.
# Example:
# models:
#   tiny:
#     model: tiny.gguf
models: {}
"""

USER_FILE = """\
# my models
models:
  qwen3-4b:
    hf: Qwen/Qwen3-4B-GGUF:Q4_K_M  # the fast one
    ctx_size: 8192

  # the tiny one, for tests
  tiny:
    model: tiny.gguf
    args:
      - --flash-attn
      - 'on'
  # the big one
  big:
    model: 'big/big-00001-of-00002.gguf'
# the end
"""

TINY = ModelSpec(name="tiny", model="tiny.gguf")


def test_a_good_file_parses():
    specs = parse_catalog(USER_FILE)
    assert list(specs) == ["qwen3-4b", "tiny", "big"]
    assert specs["qwen3-4b"] == ModelSpec(name="qwen3-4b", hf="Qwen/Qwen3-4B-GGUF:Q4_K_M", ctx_size=8192)
    assert specs["tiny"].args == ("--flash-attn", "on")
    assert type(specs["tiny"].args[1]) is str  # not a ruamel scalar subclass
    assert specs["big"].model == "big/big-00001-of-00002.gguf"


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "models:\n", "models: null\n", "models: {}\n"])
def test_nothing_declared_means_no_models(text):
    assert parse_catalog(text) == {}


def test_an_absent_file_means_no_models(tmp_path):
    assert load_catalog(tmp_path / "absent.yaml") == {}


def test_load_reads_the_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(USER_FILE)
    assert load_catalog(path) == parse_catalog(USER_FILE)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        pytest.param("models:\n  tiny: model: x\n", 2, "not valid YAML", id="syntax"),
        pytest.param("models:\n  tiny:\n    model: t.gguf\n\n  b:\n    model: b.gguf\n    ctx_size: -1\n", 7,
                     "models.b.ctx_size: Input should be greater than or equal to 0", id="bad-value"),
        pytest.param("models:\n  tiny:\n    model: t.gguf\n    ctxsize: 5\n", 4, "models.tiny.ctxsize", id="unknown-field"),
        pytest.param("models:\n  tiny:\n    model: t.gguf\n  Bad Name:\n    model: b.gguf\n", 4,
                     "models.Bad Name: invalid model name", id="bad-name"),
        pytest.param("models:\n  tiny:\n    model: t.gguf\n  tiny:\n    hf: a/b\n", 4, 'duplicate key "tiny"', id="duplicate"),
        pytest.param("models:\n  a:\n    model: a.gguf\n  tiny:\n    model: t.gguf\n    hf: a/b\n", 4,
                     "models.tiny: give exactly one source", id="model-and-hf"),
        pytest.param("models: {}\n\nmodel:\n  tiny: {}\n", 3, "unknown top-level key 'model'", id="top-level"),
        pytest.param("models:\n  tiny:\n    model: t.gguf\n    aliases:\n      - fine\n      - 5\n", 6,
                     "models.tiny.aliases.1: Input should be a valid string", id="list-item"),
        pytest.param("models:\n  tiny:\n    model: t.gguf\n    gpu_layers: lots\n", 4,
                     "models.tiny.gpu_layers: Input should be a valid integer", id="union-field"),
        pytest.param("models:\n  tiny:\n    name: other\n    model: t.gguf\n", 3, "models.tiny.name", id="name-inside"),
        pytest.param("models:\n  tiny: t.gguf\n", 2, "models.tiny: expected settings", id="not-a-mapping"),
        pytest.param("models:\n  - tiny\n", 1, "`models:` must map model names", id="models-a-list"),
    ],
)
def test_errors_name_the_line(text, line, reason):
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "conf/m.yaml")
    error = caught.value
    assert (error.path, error.line) == ("conf/m.yaml", line)
    assert reason in error.reason
    assert str(error) == f"conf/m.yaml, line {line}: {error.reason}"


def test_error_reads_like_the_brief():
    text = "\n".join(["models:", "  a:", "    model: a.gguf", "", "  # tiny", "  tiny:", "    ctx_size: -5",
                      "    model: tiny.gguf", ""])
    with pytest.raises(CatalogError, match=r"^config/models.yaml, line 7: models.tiny.ctx_size: "
                                           r"Input should be greater than or equal to 0$"):
        parse_catalog(text)


def test_adding_to_the_shipped_file_keeps_comments_and_is_block_style():
    spec = ModelSpec(name="qwen", hf="Qwen/Qwen3-4B-GGUF:Q4_K_M", ctx_size=8192, args=("--flash-attn", "on"))
    text = render_with_model(SHIPPED, spec)
    assert text.startswith(SHIPPED.removesuffix("models: {}\n"))
    assert "{qwen" not in text and "models: {" not in text
    assert "\nmodels:\n  qwen:\n    hf: Qwen/Qwen3-4B-GGUF:Q4_K_M\n    ctx_size: 8192\n" in text
    assert parse_catalog(text) == {"qwen": spec}
    # `on` is a boolean to YAML 1.1 readers: it is quoted, so PyYAML reads the same file
    assert pyyaml.safe_load(text)["models"]["qwen"]["args"] == ["--flash-attn", "on"]


@pytest.mark.parametrize("text", ["", "# just a note\n", "models:\n", "models: ~  # none yet\n", "{}\n",
                                  "models: {a: {model: a.gguf}}\n"])
def test_adding_where_there_are_no_block_models_yet(text):
    new_text = render_with_model(text, TINY)
    assert parse_catalog(new_text) == parse_catalog(text) | {"tiny": TINY}
    assert "tiny:\n    model: tiny.gguf\n" in new_text
    for comment in ("# just a note", "# none yet"):
        assert (comment in text) == (comment in new_text)


def test_adding_appends_and_leaves_every_other_line_alone():
    spec = ModelSpec(name="gemma", hf="ggml-org/gemma-3-1b-it-GGUF:Q4_K_M", gpus=(0,))
    text = render_with_model(USER_FILE, spec)
    old_lines = USER_FILE.splitlines()
    assert text.splitlines() == old_lines[:-1] + ["  gemma:", "    hf: ggml-org/gemma-3-1b-it-GGUF:Q4_K_M",
                                                  "    gpus: [0]", "# the end"]
    assert list(parse_catalog(text)) == ["qwen3-4b", "tiny", "big", "gemma"]


def test_adding_follows_the_files_indentation():
    text = "models:\n    a:\n        model: a.gguf\n"
    assert render_with_model(text, TINY) == text + "    tiny:\n        model: tiny.gguf\n"


def test_replacing_keeps_the_place_and_the_neighbours_comments():
    spec = ModelSpec(name="tiny", model="tiny-q8.gguf", parallel=2)
    text = render_with_model(USER_FILE, spec)
    assert text == USER_FILE.replace(
        "  tiny:\n    model: tiny.gguf\n    args:\n      - --flash-attn\n      - 'on'\n",
        "  tiny:\n    model: tiny-q8.gguf\n    parallel: 2\n")
    assert list(parse_catalog(text)) == ["qwen3-4b", "tiny", "big"]
    assert parse_catalog(text)["tiny"] == spec


def test_removing_keeps_the_other_models_and_comments():
    text = render_without_model(USER_FILE, "tiny")
    assert list(parse_catalog(text)) == ["qwen3-4b", "big"]
    for comment in ("# my models", "# the fast one", "# the big one", "# the end"):
        assert comment in text
    assert "model: tiny.gguf" not in text and "flash-attn" not in text


def test_removing_the_last_model_leaves_comments_after_it():
    text = render_without_model(USER_FILE, "big")
    assert text.endswith("      - 'on'\n  # the big one\n# the end\n")
    assert list(parse_catalog(text)) == ["qwen3-4b", "tiny"]


def test_removing_every_model_leaves_an_empty_catalog():
    text = USER_FILE
    for name in ("qwen3-4b", "big", "tiny"):
        text = render_without_model(text, name)
    assert parse_catalog(text) == {}
    assert "# my models" in text and "# the end" in text
    assert parse_catalog(render_with_model(text, TINY)) == {"tiny": TINY}


def test_removing_from_a_flow_mapping():
    assert parse_catalog(render_without_model("models: {a: {model: a.gguf}, tiny: {model: t.gguf}}\n", "tiny")) == {
        "a": ModelSpec(name="a", model="a.gguf")}


def test_removing_an_unknown_model_is_a_key_error():
    with pytest.raises(KeyError):
        render_without_model(USER_FILE, "nope")


def test_rendering_refuses_a_broken_text():
    with pytest.raises(CatalogError):
        render_with_model("models:\n  a: [\n", TINY)


def test_a_rendering_bug_cannot_produce_an_unreadable_text(monkeypatch):
    monkeypatch.setattr(catalog, "_entry", lambda spec: {"tiny": {"model": "tiny.gguf", "hf": "a/b"}})
    with pytest.raises(AssertionError):
        render_with_model(USER_FILE, TINY)


def test_update_writes_the_change_and_returns_the_specs(tmp_path):
    path = tmp_path / "config" / "models.yaml"
    specs = update_catalog(path, lambda text: render_with_model(text, TINY))
    assert specs == {"tiny": TINY} == load_catalog(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_update_refuses_to_touch_a_broken_file(tmp_path):
    path = tmp_path / "models.yaml"
    broken = b"models:\n  tiny:\n    model: tiny.gguf\n    ctx_size: lots\n"
    path.write_bytes(broken)
    called = []
    with pytest.raises(CatalogError) as caught:
        update_catalog(path, lambda text: called.append(text) or render_with_model("", TINY))
    assert caught.value.line == 4 and caught.value.path == str(path)
    assert path.read_bytes() == broken and not called
    assert os.listdir(tmp_path) == ["models.yaml"]


def test_update_refuses_a_change_that_does_not_parse(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(USER_FILE)
    with pytest.raises(CatalogError):
        update_catalog(path, lambda text: text + "oops: 1\n")
    assert path.read_text() == USER_FILE


def test_save_keeps_permissions_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("old\n")
    path.chmod(0o600)
    save_catalog_text(path, "models: {}\n")
    assert path.read_text() == "models: {}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["models.yaml"]


def test_save_makes_missing_directories(tmp_path):
    path = tmp_path / "a" / "b" / "models.yaml"
    save_catalog_text(path, "models: {}\n")
    assert path.read_text() == "models: {}\n"


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "real.yaml"
    target.write_text("old\n")
    link = tmp_path / "models.yaml"
    link.symlink_to(target)
    save_catalog_text(link, "models: {}\n")
    assert link.is_symlink() and target.read_text() == "models: {}\n"


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "models.yaml"
    path.write_text(USER_FILE)

    def fail(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        save_catalog_text(path, "models: {}\n")
    assert path.read_text() == USER_FILE
    assert os.listdir(tmp_path) == ["models.yaml"]


def test_undeclared_gguf_files(tmp_path: Path):
    models = tmp_path / "models"
    for relative in [
        "tiny.gguf", "stray.gguf", "notes.txt",
        "qwen/qwen-q4.gguf", "qwen/mmproj.gguf", "qwen/deeper/other.GGUF",
        "big/big-00001-of-00003.gguf", "big/big-00002-of-00003.gguf", "big/big-00003-of-00003.gguf",
        "split/s-00001-of-00002.gguf", "split/s-00002-of-00002.gguf",
        ".cache/huggingface/downloaded.gguf", ".partial.gguf",
    ]:
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        (models / relative).write_bytes(b"GGUF")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "outside.gguf").write_bytes(b"GGUF")
    (models / "linked-dir").symlink_to(outside, target_is_directory=True)
    (models / "linked-file.gguf").symlink_to(outside / "outside.gguf")
    specs = {
        "tiny": TINY,
        "qwen": ModelSpec(name="qwen", model="qwen/qwen-q4.gguf", mmproj="qwen/mmproj.gguf"),
        "split": ModelSpec(name="split", model="split/s-00001-of-00002.gguf"),
        "remote": ModelSpec(name="remote", hf="a/b"),
    }
    assert undeclared_gguf_files(models, specs) == ["big/big-00001-of-00003.gguf", "qwen/deeper/other.GGUF", "stray.gguf"]


def test_undeclared_gguf_files_without_a_models_dir(tmp_path):
    assert undeclared_gguf_files(tmp_path / "absent", {}) == []


# --- the live catalog is created on first use (git tracks only the example) -------------------

from orchestrator.catalog import STARTER, ensure_catalog  # noqa: E402

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_the_example_is_a_valid_empty_catalog_and_the_live_file_is_not_tracked():
    assert load_catalog(REPO_CONFIG / "models.example.yaml") == {}
    ignored = (REPO_CONFIG.parent / ".gitignore").read_text().splitlines()
    assert "config/models.yaml" in ignored and "config/upstreams.yaml" in ignored


def test_ensure_catalog_copies_the_example_once(tmp_path):
    shutil.copy(REPO_CONFIG / "models.example.yaml", tmp_path / "models.example.yaml")
    live = tmp_path / "models.yaml"
    assert ensure_catalog(live) is True
    assert live.read_text() == (REPO_CONFIG / "models.example.yaml").read_text()
    live.write_text("models:\n  mine: {model: a.gguf}\n")
    assert ensure_catalog(live) is False
    assert live.read_text() == "models:\n  mine: {model: a.gguf}\n"


def test_ensure_catalog_without_an_example_writes_a_starter(tmp_path):
    live = tmp_path / "config" / "models.yaml"
    assert ensure_catalog(live) is True
    assert live.read_text() == STARTER and load_catalog(live) == {}
    assert "models.example.yaml" in STARTER
