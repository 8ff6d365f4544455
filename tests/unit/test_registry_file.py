from pathlib import Path

import pytest

from gateway.routes.registry import load_upstreams, state_from_health
from gateway.routes.table import ModelState


def test_missing_file_means_no_models(tmp_path):
    assert load_upstreams(tmp_path / "absent.yaml") == []


def test_file_is_parsed_with_aliases(tmp_path: Path):
    path = tmp_path / "u.yaml"
    path.write_text("models:\n  a:\n    url: http://127.0.0.1:1/\n    aliases: [x, y]\n")
    (route,) = load_upstreams(path)
    assert (route.name, route.url, route.aliases) == ("a", "http://127.0.0.1:1", ("x", "y"))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("models: [", "not valid YAML"),
        ("models:\n  a:\n    url: ftp://x\n", "url"),
        ("models:\n  a: {}\n", "url"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(tmp_path, text, reason):
    path = tmp_path / "u.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        load_upstreams(path)


@pytest.mark.parametrize(
    "status, state",
    [(200, ModelState.READY), (503, ModelState.STARTING), (None, ModelState.STOPPED), (500, ModelState.FAILED)],
)
def test_state_from_health(status, state):
    assert state_from_health(status, "refused")[0] is state


def test_providers_are_read_beside_the_models(tmp_path: Path):
    from gateway.routes.registry import read_upstreams
    path = tmp_path / "u.yaml"
    path.write_text("models:\n  a: {url: 'http://127.0.0.1:8090'}\nproviders:\n  lmstudio:\n"
                    "    url: http://127.0.0.1:1234/v1\n    api_key_env: LM_KEY\n    models: ['qwen*']\n")
    read = read_upstreams(path)
    assert [r.name for r in read.models] == ["a"]
    entry = read.providers["lmstudio"]
    assert (entry.url, entry.api_key_env, entry.models) == ("http://127.0.0.1:1234", "LM_KEY", ["qwen*"])


@pytest.mark.parametrize(
    "text, line, says",
    [
        ("providers:\n  lm:\n    url: http://x\n    refresh_s: -1\n", 4, "refresh_s"),
        ("models: {}\nproviders:\n  lm:\n    urll: http://x\n", 4, "urll"),
        ("providers:\n  'a:b': {url: 'http://x'}\n", 2, "providers.a:b"),
        ("providers:\n  llamacpp: {url: 'http://x'}\n", 1, "our own models"),
        ("provider:\n  lm: {url: 'http://x'}\n", 1, "provider"),  # a misspelt section is said, not ignored
        ("providers:\n  lm: {url: [\n", 3, "not valid YAML"),
    ],
)
def test_a_bad_providers_section_is_refused_with_its_line(tmp_path, text, line, says):
    path = tmp_path / "u.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=says) as refused:
        load_upstreams(path)
    assert f"line {line}" in str(refused.value), str(refused.value)
