"""The gateway's HTTP API as the CLI uses it: one place for URLs, tokens and errors.

Every failure becomes ``CallFailed`` with one sentence a person can act on: the
gateway's own error message when there is one, else what could not be reached.
Answers are parsed once, into the contract's types (``Api.get``), and read by field.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from contract.errors import error_detail

DEFAULT_URL = "http://127.0.0.1:8080"
Answer = TypeVar("Answer", bound=BaseModel)


class CallFailed(Exception):
    """A call to the gateway that did not give what was asked, in words."""

    def __init__(self, message: str, status: int | None = None, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.log_tail = log_tail or []


@dataclass(frozen=True)
class Connection:
    url: str
    admin_token: str = ""
    api_key: str = ""

    @classmethod
    def from_env(cls, url: str | None = None, admin_token: str | None = None, api_key: str | None = None) -> "Connection":
        return cls(
            url=(url or os.environ.get("LLAMADOCK_URL") or DEFAULT_URL).rstrip("/"),
            admin_token=admin_token if admin_token is not None else os.environ.get("LLAMADOCK_ADMIN_TOKEN", ""),
            api_key=api_key if api_key is not None else os.environ.get("LLAMADOCK_API_KEY", ""),
        )


def error_from_response(response: httpx.Response) -> CallFailed:
    error = error_detail(response.content)
    if error is None:  # not the gateway's error (a proxy's page, a bare status)
        return CallFailed(response.text.strip() or response.reason_phrase, response.status_code)
    return CallFailed(error.message, response.status_code, error.log_tail)


class Api:
    def __init__(self, conn: Connection, timeout: float | None = 30.0) -> None:
        self.conn = conn
        self.client = httpx.Client(base_url=conn.url, timeout=httpx.Timeout(timeout, connect=5.0))

    def _headers(self, admin: bool) -> dict[str, str]:
        token = self.conn.admin_token if admin else self.conn.api_key
        return {"authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, *, admin: bool = False, **kwargs) -> dict:
        if admin and not self.conn.admin_token:
            raise CallFailed("This needs the admin token: set LLAMADOCK_ADMIN_TOKEN (it is in .env after `make up`).")
        try:
            response = self.client.request(method, path, headers=self._headers(admin), **kwargs)
        except httpx.ConnectError:
            raise CallFailed(f"Cannot reach the gateway at {self.conn.url}: is the stack up (`make up`)?") from None
        except httpx.TimeoutException:
            raise CallFailed(f"The gateway at {self.conn.url} did not answer in time.") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.json()

    def get(self, answer: type[Answer], method: str, path: str, *, admin: bool = False, **kwargs) -> Answer:
        """``request``, parsed as ``answer`` (a contract type)."""
        raw = self.request(method, path, admin=admin, **kwargs)
        try:
            return answer.model_validate(raw)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem.get("loc", ()))
            raise CallFailed(f"The gateway's {path} does not read as expected ({where}: {problem['msg']}): "
                             "is it another version of llamadock?") from None

    @contextmanager
    def stream_post(self, path: str, body: dict) -> Iterator[Iterator[bytes]]:
        """POST ``body`` and yield the response body's chunks as they arrive.

        Leaving the block early (an exception, Ctrl-C) closes the connection: the gateway
        then drops its upstream one, and llama-server stops generating.
        """
        try:
            with self.client.stream("POST", path, json=body, headers=self._headers(False),
                                    timeout=httpx.Timeout(None, connect=5.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield response.iter_bytes()
        except httpx.ConnectError:
            raise CallFailed(f"Cannot reach the gateway at {self.conn.url}: is the stack up (`make up`)?") from None
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise CallFailed(f"The connection to the gateway broke off ({detail}).") from None

    def stream_text(self, path: str, *, admin: bool = False, params: dict | None = None) -> Iterator[str]:
        try:
            with self.client.stream("GET", path, headers=self._headers(admin), params=params,
                                    timeout=httpx.Timeout(None, connect=5.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield from response.iter_text()
        except httpx.ConnectError:
            raise CallFailed(f"Cannot reach the gateway at {self.conn.url}: is the stack up (`make up`)?") from None
