"""How both services log: routine lines (httpx's per call, uvicorn's access line) only at DEBUG,
everything else as before; JSON lines when asked."""

from __future__ import annotations

import io
import json
import logging

import pytest

from common.logs import configure_logging


@pytest.fixture
def logged():
    out = io.StringIO()

    def configure(level: str, log_format: str = "plain") -> io.StringIO:
        configure_logging(level, log_format, stream=out)
        for name in ("httpx", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.NOTSET)  # as uvicorn leaves them at this level; other tests' servers change it
        return out
    yield configure
    configure_logging("info", "plain")


def emit() -> None:
    logging.getLogger("httpx").info('HTTP Request: GET http://m:8080/health "HTTP/1.1 200 OK"')
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/health", "1.0", 200)
    logging.getLogger("llamadock.lifecycle").info("started tiny in 0.4 s")


def test_at_info_probes_and_access_lines_are_left_out(logged):
    out = logged("info")
    emit()
    assert out.getvalue().splitlines() == [line for line in out.getvalue().splitlines() if "tiny" in line]
    assert len(out.getvalue().splitlines()) == 1 and " INFO llamadock.lifecycle: started tiny" in out.getvalue()


def test_at_debug_they_show_as_debug_lines(logged):
    out = logged("debug")
    emit()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert " DEBUG httpx: HTTP Request: GET" in lines[0]
    assert ' DEBUG uvicorn.access: 127.0.0.1:5 - "GET /health HTTP/1.0" 200' in lines[1]
    assert " INFO llamadock.lifecycle:" in lines[2]


def test_json_is_one_object_per_line(logged):
    out = logged("info", "json")
    logging.getLogger("llamadock.registry").warning("lost the orchestrator (%s)", "refused")
    (line,) = out.getvalue().splitlines()
    assert {k: v for k, v in json.loads(line).items() if k != "time"} == {
        "level": "WARNING", "logger": "llamadock.registry", "message": "lost the orchestrator (refused)"}


def test_configuring_again_does_not_double_the_lines(logged):
    logged("info")
    out = logged("info")
    logging.getLogger("x").info("once")
    assert out.getvalue().count("once") == 1
