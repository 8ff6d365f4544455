"""A program in a real terminal: a detached tmux session on a private tmux server.

Tests type with ``send-keys`` and read the screen with ``capture-pane``, waiting on what
appears (never on time).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

from .waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 200, 50
WAIT_S = 30


class Terminal:
    """One program in a detached tmux session, on a private tmux server (its own socket)."""

    def __init__(self, workdir: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.width, self.height = width, height
        self.socket = workdir / "tmux.sock"
        self.config = workdir / "tmux.conf"
        # remain-on-exit: the pane stays after the program ends, so its exit status can be read.
        self.config.write_text("set -g remain-on-exit on\nset -g history-limit 100000\nset -g status off\n")
        self.workdir = workdir
        self.env = dict(os.environ)

    def tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-S", str(self.socket), "-f", str(self.config), *args],
                             capture_output=True, text=True, timeout=10, env=self.env)
        if out.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self, argv: list[str], env: dict[str, str]) -> "Terminal":
        # The working directory is a temporary one: PYTHONPATH makes `python -m cli` this checkout's cli,
        # not the one installed in the virtualenv (another checkout's, for a worktree).
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LLAMADOCK_", "TMUX"))},
                    "PYTHONPATH": str(REPO), **env}
        self.tmux("new-session", "-d", "-s", "chat", "-x", str(self.width), "-y", str(self.height), "-c", str(self.workdir),
                  shlex.join(argv))
        self.server_pid = int(self.tmux("display-message", "-p", "#{pid}"))
        return self

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "chat", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", text)
        self.keys("Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "chat")

    def transcript(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "chat")

    def last_line(self) -> str:
        lines = [line.strip() for line in self.screen().split("\n") if line.strip()]
        return lines[-1] if lines else ""

    def exit_status(self) -> int | None:
        """The program's exit status once it has ended (-N: killed by signal N), else None."""
        dead, status, killed_by = self.tmux("display-message", "-p", "-t", "chat",
                                            "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}").strip().split(":")
        if dead == "1" and (status or killed_by):
            return int(status) if status else -int(killed_by)
        # Debian's tmux uses libutempter, whose own SIGCHLD handler, in place while tmux records
        # the closed terminal, can swallow the SIGCHLD of the program's exit: the pane then stays
        # "alive" around a zombie (tmux/tmux#311). Another SIGCHLD makes tmux reap it.
        os.kill(self.server_pid, signal.SIGCHLD)
        return None

    def wait(self, condition, what: str, timeout: float = WAIT_S):
        return wait_until(condition, timeout, what, detail=lambda: f"the screen:\n{self.screen()}")

    def wait_for_text(self, pattern: str | re.Pattern, what: str | None = None, timeout: float = WAIT_S) -> re.Match:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return self.wait(lambda: regex.search(self.transcript()), what or f"/{regex.pattern}/", timeout)

    def stop(self) -> None:
        if self.socket.exists():
            subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=10)
