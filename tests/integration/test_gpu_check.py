"""The GPU self-check's smoke path on this machine (CPU build, tiny model, NVML columns n/a), and its parsers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


def test_smoke_run_prints_estimates_and_streams_through_the_gateway(llama_server_bin, tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--smoke", "--llama-server", str(llama_server_bin),
         "--work", str(tmp_path / "models"), "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "estimate MiB" in proc.stdout and "gw/direct" in proc.stdout
    figures = json.loads(out.read_text())
    assert [r["config"] for r in figures["memory"]] == [c.name for c in gpu_check.SMOKE]
    for row in figures["memory"]:
        assert row["estimate_mib"] > row["parts"]["weights_bytes"] > 0
        assert row["load_s"] > 0
        if not gpu_check.has_gpu():
            assert row["actual_mib"] is None and row["parts"]["overhead_bytes"] == 0
    assert [s["clients"] for s in figures["streaming"]] == [1, 2]
    for s in figures["streaming"]:
        assert s["tokens"] >= s["clients"] * 16  # every stream ran to max_tokens (counted in SSE events)
        assert s["direct_tps"] > 0 and s["gateway_tps"] > 0


def test_compute_apps_csv():
    text = "1234, 2762\n99, 10\n1234, 100\n777, [N/A]\ngarbage\n"
    assert gpu_check.parse_compute_apps(text) == {1234: 2862, 99: 10}


def test_verdicts():
    row = gpu_check.MemoryRow("x", estimate_mib=1100, actual_mib=1000, load_s=1)
    assert (round(row.ratio, 2), row.verdict) == (1.1, "ok")
    assert gpu_check.MemoryRow("x", 900, 1000, 1).verdict == "UNDER"
    assert gpu_check.MemoryRow("x", 1200, 1000, 1).verdict == "high"
    assert gpu_check.MemoryRow("x", 1200, None, 1).verdict == "n/a"


def test_llama_image_script_arguments():
    run = lambda *a, **env: subprocess.run(["bash", str(REPO / "scripts" / "llama-image.sh"), *a], cwd=REPO,  # noqa: E731
                                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env})
    cuda = run("--dry-run", GPU="1", CUDA_ARCHITECTURES="86;120")
    assert cuda.returncode == 0, cuda.stderr
    assert "llamadock/llama-server:cuda" in cuda.stdout and "GGML_CUDA=ON" in cuda.stdout
    assert "CUDA_ARCHITECTURES=86\\;120" in cuda.stdout and "nvidia/cuda:" in cuda.stdout
    cpu = run("--dry-run", GPU="0")
    assert "llamadock/llama-server:cpu" in cpu.stdout and "CUDA" not in cpu.stdout
    assert run("--dry-run", GPU="2").returncode == 2
    assert run("--dry-run", GPU="1", CUDA_ARCHITECTURES="sm_90; rm -rf").returncode == 2
    assert run("--bogus").returncode == 2
