"""common/: the error type and handlers both services share, the token check, the size
formatter and the atomic write."""

from __future__ import annotations

import stat

import pytest
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from common.auth import bearer_matches, presented_bearer, secret_matches
from common.errors import ApiError, install_error_handlers
from common.files import atomic_write
from common.sizes import GiB, MiB, format_size


# --- errors -------------------------------------------------------------------------------------

def test_the_type_follows_the_status_unless_given():
    assert ApiError(404, "x").type == "invalid_request_error"
    assert ApiError(503, "x").type == "server_error"
    assert ApiError(401, "x", type="authentication_error").type == "authentication_error"


def test_log_tail_is_a_field_only_when_there_is_one():
    assert set(ApiError(500, "x", "c").body()["error"]) == {"message", "type", "param", "code"}
    failed = ApiError(422, "exited", "model_failed_to_start", log_tail=["oom"])
    assert failed.body()["error"]["log_tail"] == ["oom"] and failed.log_tail == ["oom"]
    assert ApiError(500, "x").log_tail == []


class Spec(BaseModel):
    name: str
    ctx: int


def app_with_handlers(**kw) -> TestClient:
    app = FastAPI()
    install_error_handlers(app, service="orchestrator", validation_prefix="Invalid model spec",
                           validation_code="invalid_spec", **kw)

    @app.post("/models")
    async def add(spec: Spec, replace: bool = Query(False)) -> dict:
        return {}

    @app.get("/refused")
    async def refused() -> dict:
        raise ApiError(409, "taken", "model_exists", "name", headers={"Retry-After": "1"})

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("kaput")

    return TestClient(app, raise_server_exceptions=False)


def test_validation_lists_every_problem_and_names_the_first_field():
    reply = app_with_handlers().post("/models?replace=maybe", json={"ctx": "big"})
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["code"] == "invalid_spec" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("Invalid model spec: ")
    assert "name: Field required" in error["message"] and "ctx: Input should be a valid integer" in error["message"]
    assert "replace: " in error["message"] and "body." not in error["message"]
    assert error["param"] in ("name", "ctx", "replace")


def test_raised_errors_starlettes_and_the_unexpected_share_the_shape():
    client = app_with_handlers()
    refused = client.get("/refused")
    assert refused.status_code == 409 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == {"message": "taken", "type": "invalid_request_error", "param": "name",
                                       "code": "model_exists"}
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"
    wrong_method = client.delete("/refused")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["allow"]
    boom = client.get("/boom")
    assert boom.status_code == 500 and boom.json()["error"] == {
        "message": "The orchestrator failed unexpectedly: RuntimeError: kaput.", "type": "server_error",
        "param": None, "code": "internal_error"}


def test_render_chooses_the_shape():
    client = app_with_handlers(render=lambda request, error: JSONResponse({"error": error.message}, error.status))
    assert client.get("/refused").json() == {"error": "taken"}
    assert client.get("/boom").status_code == 500


# --- auth ---------------------------------------------------------------------------------------

def test_bearer_matches_only_the_token():
    assert bearer_matches("Bearer s3cret", "s3cret") and bearer_matches("bearer s3cret", "s3cret")
    assert not bearer_matches("Bearer s3cre", "s3cret") and not bearer_matches("Basic s3cret", "s3cret")
    assert not bearer_matches(None, "s3cret") and not bearer_matches("", "s3cret")
    assert not bearer_matches("Bearer ", "") and not bearer_matches("Bearer x", "")  # no token: nothing matches
    assert not bearer_matches("Bearer ünïcode", "s3cret")  # no TypeError on non-ASCII
    assert presented_bearer("Bearer  k ") == "k" and presented_bearer("Token k") is None
    assert secret_matches("k", "k") and not secret_matches(None, "k")


# --- sizes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, text", [
    (0, "0 MiB"), (120 * MiB, "120 MiB"), (GiB - MiB, "1023 MiB"), (GiB, "1.0 GiB"),
    (int(6.14 * GiB), "6.1 GiB"), (100 * GiB, "100.0 GiB"), (None, "?"),
])
def test_format_size(n, text):
    assert format_size(n) == text


def test_a_caller_says_how_unknown_reads():
    assert format_size(None, missing="-") == "-"


# --- files --------------------------------------------------------------------------------------

def test_atomic_write_makes_a_readable_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "new" / "state.json"
    assert atomic_write(path, "ü\n") == path
    assert path.read_bytes() == "ü\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and [p.name for p in path.parent.iterdir()] == ["state.json"]
