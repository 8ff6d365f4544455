"""A small OpenAI-compatible server for what a real llama-server cannot do: have no /health,
answer garbage, send a huge body, stall. Only for those cases; everything else in the provider
tests is a real llama-server. The behaviour is chosen by the request's `model`:

    (with ``stall_listing``, its /v1/models itself stalls)
    echo          a well-formed answer (stream or not), text "stub says hi"
    garbage       200 text/html
    huge          200 application/json, ``huge_bytes`` long
    stall         headers, then nothing
    stall-stream  one SSE chunk, then nothing
    bad-param     400 in OpenAI's error format
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = ("echo", "garbage", "huge", "stall", "stall-stream", "bad-param")


def _chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = {"id": "stub-1", "object": "chat.completion.chunk", "created": 1, "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class StubProvider:
    def __init__(self, huge_bytes: int = 2 * 2**20, stall_listing: bool = False) -> None:
        self.huge_bytes = huge_bytes
        self.stall_listing = stall_listing  # its /v1/models sends headers, then nothing
        self.released = threading.Event()  # ends every stall (at shutdown)
        self.requests: list[dict] = []  # what it was sent: path, model, authorization
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models" and stub.stall_listing:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "1000")
                    self.end_headers()
                    self.wfile.flush()
                    stub.released.wait(120)
                    return
                if self.path == "/v1/models":
                    body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
                    return self._send(200, "application/json", body.encode())
                self._send(404, "text/plain", b"not found")  # no /health, as many servers

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                model = body.get("model")
                stub.requests.append({"path": self.path, "model": model,
                                      "authorization": self.headers.get("authorization")})
                if model == "garbage":
                    return self._send(200, "text/html", b"<html><body>Welcome to nginx!</body></html>")
                if model == "huge":
                    return self._send(200, "application/json", b'{"x": "' + b"a" * stub.huge_bytes + b'"}')
                if model == "bad-param":
                    error = {"error": {"message": "temperature must be at most 2", "type": "invalid_request_error",
                                       "param": "temperature", "code": "invalid_value"}}
                    return self._send(400, "application/json", json.dumps(error).encode())
                if model == "stall":
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "100")
                    self.end_headers()
                    self.wfile.flush()
                    stub.released.wait(120)
                    return
                if body.get("stream") or model == "stall-stream":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("connection", "close")
                    self.end_headers()
                    self.wfile.write(_chunk(model, "stub says"))
                    self.wfile.flush()
                    if model == "stall-stream":
                        stub.released.wait(120)
                        return
                    self.wfile.write(_chunk(model, " hi") + _chunk(model, None, "stop") + b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                answer = {"id": "stub-1", "object": "chat.completion", "created": 1, "model": model,
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "stub says hi"}}]}
                self._send(200, "application/json", json.dumps(answer).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "StubProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
