"""How the gateway and the orchestrator log: one format for every logger, plain text or one JSON
object per line (``LLAMADOCK_LOG_FORMAT=json``, for people who ship logs), and the routine lines
that say nothing happened kept at DEBUG.

Routine: every HTTP call httpx makes (the orchestrator probes a loading model's ``/health`` every
20 ms, the gateway long-polls the orchestrator) and uvicorn's access line per request (Docker's
healthcheck every 2 s, each long poll). What a request did is the gateway's one activity line
(gateway/activity.py) instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["plain", "json"]
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ROUTINE_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


class AtDebug(logging.Filter):
    """A routine logger's records, re-levelled to DEBUG: shown only when DEBUG is on."""

    def __init__(self, shown: bool) -> None:
        super().__init__()
        self.shown = shown

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.shown


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        # Fields passed as `extra` (the activity record) become keys of the object.
        return JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp="time",
                             rename_fields={"levelname": "level", "name": "logger"})
    return logging.Formatter(PLAIN)


def configure_logging(level: str, log_format: LogFormat = "plain", stream=None) -> bool:
    """The root logger writes to ``stream`` (stderr) in ``log_format``; uvicorn is to be run with
    ``log_config=None`` so that its loggers go through here too. True when DEBUG is on (uvicorn's
    access log is only worth switching on then)."""
    numeric = logging.getLevelName(level.upper())
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)  # a library's warning is a log line too (one JSON object in json mode)
    debug = numeric <= logging.DEBUG
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        own = logging.getLogger(name)  # uvicorn's own handlers, if it was ever configured in this process
        for old in list(own.handlers):
            own.removeHandler(old)
        own.propagate = True
    for name in ROUTINE_LOGGERS:
        routine = logging.getLogger(name)
        for old in [f for f in routine.filters if isinstance(f, AtDebug)]:
            routine.removeFilter(old)
        routine.addFilter(AtDebug(debug))
    return debug
