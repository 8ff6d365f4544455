"""CORS from LLAMADOCK_CORS_ORIGINS: which origins a browser may call the gateway from, and the
preflight Starlette's middleware answers on every surface (before any route or key check).
The browser itself (a page on another origin streaming a chat) is tests/integration/test_browser_cors.py."""

import re

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.cors import cors_options, origin_pattern
from gateway.routes.registry import StaticRegistry
from gateway.settings import GatewaySettings


@pytest.mark.parametrize("entry, origin, allowed", [
    ("http://localhost:*", "http://localhost:5173", True),
    ("http://localhost:*", "http://localhost", True),
    ("http://localhost:*", "http://localhost.evil.com:80", False),
    ("http://localhost:*", "https://localhost:5173", False),
    ("http://127.0.0.1:*", "http://127.0.0.1:3000", True),
    ("http://127.0.0.1:*", "http://127.0.0.10:3000", False),
    ("https://*.example.com", "https://chat.example.com", True),
    ("https://*.example.com", "https://a.b.example.com", False),
    ("https://*.example.com", "https://example.com.evil.org", False),
])
def test_origin_pattern(entry, origin, allowed):
    assert bool(re.fullmatch(origin_pattern(entry), origin)) is allowed


def test_options_per_setting():
    assert cors_options([]) is None and cors_options(["", " "]) is None  # empty: off
    assert cors_options(["*"])["allow_origins"] == ["*"]
    mixed = cors_options(["https://app.example.com/", "http://localhost:*"])
    assert mixed["allow_origins"] == ["https://app.example.com"] and mixed["allow_credentials"] is True
    assert "x-llamadock-model" in mixed["expose_headers"]


def test_the_setting_is_read_comma_separated_and_defaults_to_this_machine(monkeypatch):
    assert GatewaySettings().cors_origins == ["http://localhost:*", "http://127.0.0.1:*"]
    monkeypatch.setenv("LLAMADOCK_CORS_ORIGINS", "https://a.example.com, http://localhost:*")
    assert GatewaySettings().cors_origins == ["https://a.example.com", "http://localhost:*"]
    monkeypatch.setenv("LLAMADOCK_CORS_ORIGINS", "")
    assert GatewaySettings().cors_origins == []


def gateway(tmp_path, origins, keys=()):
    settings = GatewaySettings(upstreams_file=tmp_path / "none.yaml", cors_origins=origins, api_keys=list(keys))
    return TestClient(create_app(settings, registry=StaticRegistry(settings.upstreams_file)))


def preflight(client, path, origin):
    return client.options(path, headers={"origin": origin, "access-control-request-method": "POST",
                                         "access-control-request-headers": "authorization, x-api-key, content-type"})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/upstream/m/props", "/v1/models"])
def test_preflight_on_every_surface_even_with_keys_on(tmp_path, path):
    with gateway(tmp_path, ["http://localhost:*"], keys=["k"]) as client:
        answer = preflight(client, path, "http://localhost:5173")
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert answer.headers["access-control-allow-credentials"] == "true"
        allowed = answer.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-api-key" in allowed
        refused = preflight(client, path, "http://evil.example")
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        error = refused.json()["error"]  # in OpenAI's format, as every refusal here
        assert error["code"] == "cors_refused" and "http://evil.example" in error["message"]


def test_a_public_page_may_ask_to_reach_this_machine(tmp_path):
    with gateway(tmp_path, ["https://chat.example.com"]) as client:
        answer = client.options("/v1/chat/completions", headers={
            "origin": "https://chat.example.com", "access-control-request-method": "POST",
            "access-control-request-private-network": "true"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-private-network"] == "true"


def test_answers_carry_the_origin_and_expose_the_model_header(tmp_path):
    with gateway(tmp_path, ["http://localhost:*"]) as client:
        answer = client.get("/v1/models", headers={"origin": "http://localhost:8000"})
        assert answer.headers["access-control-allow-origin"] == "http://localhost:8000"
        assert "x-llamadock-model" in answer.headers["access-control-expose-headers"]
        error = client.post("/v1/chat/completions", json={"model": "nope"}, headers={"origin": "http://localhost:1"})
        assert error.status_code == 404 and error.headers["access-control-allow-origin"] == "http://localhost:1"
        assert "access-control-allow-origin" not in client.get("/v1/models", headers={"origin": "http://x.org"}).headers


def test_off_means_no_cors_at_all(tmp_path):
    with gateway(tmp_path, []) as client:
        answer = preflight(client, "/v1/chat/completions", "http://localhost:5173")
        assert answer.status_code == 405 and "access-control-allow-origin" not in answer.headers
