"""Networking helpers for tests."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The OS picks it (bind to port 0); there is an unavoidable race between
    closing this socket and the caller binding it, so callers that spawn a
    server should retry on "address in use" (LlamaServer does).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]



def listeners(tables: str) -> set[tuple[str, int]]:
    """(address in the kernel's hex, port) of each listening socket in the text of /proc/net/tcp
    and /proc/net/tcp6 (any number of their tables, concatenated)."""
    found = set()
    for line in tables.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:  # st 0A: TCP_LISTEN
            address, port = fields[1].rsplit(":", 1)
            found.add((address, int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    """An address as /proc/net/tcp{,6} writes it (hex, in host byte order: 127.0.0.11 is 0B00007F)."""
    if len(address) == 8:
        return address.endswith("7F")  # 127.0.0.0/8: Docker's DNS resolver listens on 127.0.0.11
    return address == "00000000000000000000000001000000" or (  # ::1, or ::ffff:127.x.x.x
        address.startswith("0000000000000000FFFF0000") and address.endswith("7F"))


def listening_ports() -> set[int]:
    """The TCP ports something listens on in this network namespace (the host's, for a test)."""
    text = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text += open(table).read()
        except FileNotFoundError:
            pass
    return {port for _, port in listeners(text)}
