"""/ui: the console's files are served by the gateway, with a policy that keeps the page on its
own origin, and the page's script never builds markup from text (the browser side is
tests/integration/test_console_browser.py)."""

import re

import pytest
from fastapi.testclient import TestClient

from gateway.api.console import UI_DIR
from gateway.app import create_app
from gateway.routes.registry import StaticRegistry
from gateway.settings import GatewaySettings


@pytest.fixture
def client(tmp_path):
    upstreams = tmp_path / "upstreams.yaml"
    upstreams.write_text("models: {}\n")
    settings = GatewaySettings(upstreams_file=upstreams, api_keys="secret-key")
    return TestClient(create_app(settings, registry=StaticRegistry(upstreams, 60)))


def test_ui_redirects_to_its_folder_and_serves_the_page(client):
    moved = client.get("/ui", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "/ui/"
    page = client.get("/ui/")  # API keys on: the page itself needs none (it asks for one to chat)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>llamadock console</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        answer = client.get(f"/ui/{asset}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]


def test_an_unknown_file_is_a_404_and_paths_stay_inside_the_folder(client):
    assert client.get("/ui/nope.js").status_code == 404
    assert client.get("/ui/../gateway/app.py").status_code == 404


def test_the_page_loads_nothing_from_another_host_and_never_writes_markup():
    files = {p.name: p.read_text() for p in UI_DIR.iterdir()}
    assert set(files) == {"index.html", "app.js", "style.css"}
    for name, text in files.items():
        text = text.replace('"http://www.w3.org/2000/svg"', "")  # SVG's namespace: a name, never fetched
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name  # no CDN, no remote font
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", files["app.js"])


def test_the_console_is_small():
    assert sum(p.stat().st_size for p in UI_DIR.iterdir()) < 64 * 1024  # README states the figure
