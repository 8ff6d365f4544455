"""Gateway overhead: streaming through the gateway vs straight to llama-server.

Both paths serve the same llama-server in the same run, interleaved A/B (the
order flips every round) so machine noise hits both alike. Prints a table:

* tokens/s of each path and their ratio (gateway / direct),
* added time to first token (p50 of gateway minus p50 of direct),
* gateway CPU per streamed token, from the gateway process's own CPU
  accounting (/proc/PID/stat utime+stime) over its rounds,
* the same for a byte-for-byte TCP forwarder (bench/tcp_forwarder.py), run as
  a third interleaved path: the floor that any relay's cost sits on here.

    make bench                      # or: .venv/bin/python bench/gateway_overhead.py --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from gateway.proxy import upstream  # noqa: E402  (the lean HTTP client doubles as the load generator)
from support.gateway import GatewayProcess, write_upstreams  # noqa: E402
from support.llama import LlamaServer, ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.net import free_port  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def one_stream(base_url: str, body: bytes) -> tuple[int, float]:
    """Stream one completion; return (tokens, seconds to first token)."""
    started = time.perf_counter()
    response = await upstream.send(base_url, "POST", "/v1/chat/completions",
                                   [(b"content-type", b"application/json")], body)
    assert response.status == 200, response.status
    events, ttft, last = 0, 0.0, b""
    while (piece := await response.next_piece()) is not None:
        if not ttft:
            ttft = time.perf_counter() - started
        events += piece.count(b"\n\n") + (last == b"\n" and piece[:1] == b"\n")
        last = piece[-1:]
    response.close()
    # The last two events are the finish chunk and [DONE]; the rest carry one token each.
    return max(0, events - 2), ttft


async def round_(base_url: str, clients: int, body: bytes) -> tuple[int, float, list[float]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one_stream(base_url, body) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return sum(tokens for tokens, _ in results), elapsed, [ttft for _, ttft in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds per concurrency level")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per request")
    parser.add_argument("--clients", default="1,8", help="concurrency levels, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    binary = ensure_llama_server()
    work = Path(tempfile.mkdtemp(prefix="llamadock-bench-"))
    model = make_tiny_model(work / "tiny.gguf", name="tiny", seed=1, vocab=vocab_path(binary))
    slots = max(levels)
    server = LlamaServer(binary, model, parallel=slots, ctx=slots * 1024, threads=args.threads, log_dir=work)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Tell me a story"}],
                       "max_tokens": args.tokens, "ignore_eos": True, "stream": True}).encode()
    rows = []
    with server:
        upstreams = write_upstreams(work / "upstreams.yaml", {"tiny": {"url": server.url}})
        forwarder_port = free_port()
        forwarder = subprocess.Popen([sys.executable, str(REPO / "bench" / "tcp_forwarder.py"),
                                      str(server.port), str(forwarder_port)])
        with GatewayProcess(upstreams) as gateway:
            urls = {"direct": server.url, "gateway": gateway.url, "forwarder": f"http://127.0.0.1:{forwarder_port}"}
            pids = {"gateway": gateway.pid, "forwarder": forwarder.pid}
            for url in urls.values():
                asyncio.run(round_(url, slots, body))  # warm every path (prompt cache, imports)
            for clients in levels:
                stats = {path: [0, 0.0, []] for path in urls}
                cpu = {path: 0.0 for path in pids}
                for rnd in range(args.rounds):
                    order = list(urls) if rnd % 2 == 0 else list(reversed(urls))
                    for path in order:
                        before = {p: cpu_seconds(pid) for p, pid in pids.items()}
                        tokens, elapsed, ttfts = asyncio.run(round_(urls[path], clients, body))
                        if path in pids:
                            cpu[path] += cpu_seconds(pids[path]) - before[path]
                        stats[path][0] += tokens
                        stats[path][1] += elapsed
                        stats[path][2] += ttfts
                d_tps = stats["direct"][0] / stats["direct"][1]
                g_tps = stats["gateway"][0] / stats["gateway"][1]
                d_ttft = statistics.median(stats["direct"][2]) * 1000
                g_ttft = statistics.median(stats["gateway"][2]) * 1000
                rows.append({
                    "clients": clients, "direct_tps": d_tps, "gateway_tps": g_tps, "ratio": g_tps / d_tps,
                    "direct_ttft_ms": d_ttft, "gateway_ttft_ms": g_ttft, "added_ttft_ms": g_ttft - d_ttft,
                    "gateway_cpu_us_per_token": cpu["gateway"] / stats["gateway"][0] * 1e6,
                    "forwarder_cpu_us_per_token": cpu["forwarder"] / stats["forwarder"][0] * 1e6,
                    "forwarder_ratio": stats["forwarder"][0] / stats["forwarder"][1] / d_tps,
                    "tokens": stats["gateway"][0],
                })
        forwarder.kill()
    print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def print_table(rows: list[dict], args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Gateway overhead: {args.rounds} interleaved A/B rounds x {args.tokens} tokens per client, "
                        f"llama-server --threads {args.threads}")
    for column in ("clients", "direct tok/s", "gateway tok/s", "ratio", "TTFT p50 direct", "TTFT p50 gateway",
                   "added TTFT", "gateway CPU / token", "TCP forwarder: ratio", "TCP forwarder CPU / token"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["clients"]), f"{r['direct_tps']:,.0f}", f"{r['gateway_tps']:,.0f}", f"{r['ratio']:.3f}",
                      f"{r['direct_ttft_ms']:.2f} ms", f"{r['gateway_ttft_ms']:.2f} ms", f"{r['added_ttft_ms']:+.2f} ms",
                      f"{r['gateway_cpu_us_per_token']:.1f} µs", f"{r['forwarder_ratio']:.3f}",
                      f"{r['forwarder_cpu_us_per_token']:.1f} µs")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
