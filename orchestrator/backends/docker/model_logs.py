"""Which of a model server's output lines the orchestrator copies into its own log, where
``docker compose logs -f`` shows them (compose shows only the containers it created itself).

The whole output stays in the model container's own log (json-file, rotated; ``llamadock models
logs NAME``). Copying it all doubled the stack's log volume: llama-server writes several lines per
request (the slot taken, prompt and generation timings, the slot released, the request line),
and the gateway's activity line says what each request did already. So by default ("events")
a run is copied from its start until the server listens (the load: what a person watches, and
what explains a model that fails to start), and after that only the lines that report trouble or
the server's end. Pure: one ``ModelLogFilter`` per container run, fed its lines in order.
"""

from __future__ import annotations

import re
from typing import Literal

ModelLogs = Literal["events", "all", "off"]

# llama-server's line once it is loaded and serving: "srv  llama_server: listening on http://..." (b11312),
# "main: server is listening on ... - starting the main loop" (older builds).
LISTENING = re.compile(r"listening on http|server is listening|starting the main loop")
# After that: lines it marks as warnings or errors (its log prefix "0.00.002.217 W srv ..."), and
# words of trouble or of the server going away, for builds that mark nothing.
MARKED = re.compile(r"^\s*[\d.]+ [WE] ")
NOTEWORTHY = re.compile(r"error|warn|fail|abort|assert|exception|terminat|segmentation|out of memory|"
                        r"killed|signal|exiting|shutting down|cleaning up|context shift|exceeds", re.IGNORECASE)


class ModelLogFilter:
    def __init__(self, mode: ModelLogs = "events") -> None:
        self.mode = mode
        self.loading = True

    def keep(self, line: str) -> bool:
        if self.mode == "all":
            return True
        if self.mode == "off":
            return False
        if self.loading:
            if LISTENING.search(line):
                self.loading = False
            return True
        return bool(MARKED.match(line) or NOTEWORTHY.search(line))
