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
