"""`make up` warns when the upstreams file points at one of the stack's own ports."""

import re
from pathlib import Path

import pytest

from gateway.routes.own_ports import main, own_port_warnings

PORTS = {"gateway": 8080}


@pytest.mark.parametrize("url, hit", [
    ("http://127.0.0.1:8081", None),  # the old example's port: the orchestrator had it once, no longer
    ("http://localhost:8080/v1", "gateway"),
    ("http://host.docker.internal:8080", "gateway"),
    ("http://127.0.1.1:8080", "gateway"),
    ("http://gateway:8080", "gateway"),
    ("http://127.0.0.1:8090", None),
    ("http://127.0.0.1:1234", None),
    ("http://192.168.1.20:8080", None),  # another machine's 8080 is not ours
    ("https://api.example.com", None),
])
def test_own_port_warnings(url, hit):
    warnings = own_port_warnings([("model 'x'", url)], PORTS)
    assert len(warnings) == (hit is not None)
    if hit:
        assert f"the {hit}'s own port" in warnings[0] and url in warnings[0]


def test_moved_ports_are_the_ones_checked():
    assert own_port_warnings([("m", "http://127.0.0.1:8080")], {"gateway": 8090}) == []
    assert own_port_warnings([("m", "http://127.0.0.1:8090")], {"gateway": 8090})


def test_the_shipped_example_points_at_no_port_of_ours(capsys):
    example = Path(__file__).resolve().parents[2] / "config" / "upstreams.example.yaml"
    # Every URL in it, commented out or not (a user uncomments them), checked as `make up` would.
    urls = re.findall(r"https?://[^\s\"']+", example.read_text())
    assert len(urls) >= 4 and own_port_warnings([("example", url) for url in urls], PORTS) == []
    assert main([str(example), "--port", "gateway=8080"]) == 0
    assert capsys.readouterr().err == ""


def test_the_command_warns_per_entry_and_never_fails(tmp_path, capsys):
    path = tmp_path / "u.yaml"
    path.write_text("models:\n  x: {url: 'http://127.0.0.1:8080'}\nproviders:\n  p: {url: 'http://localhost:8080/v1'}\n")
    assert main([str(path), "--port", "gateway=8080"]) == 0
    err = capsys.readouterr().err
    assert "model 'x'" in err and "gateway's own port" in err and "provider 'p'" in err
    path.write_text("models: [\n")
    assert main([str(path), "--port", "gateway=8080"]) == 0
    assert "not valid YAML" in capsys.readouterr().err
