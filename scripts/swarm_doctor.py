#!/usr/bin/env python3
"""Is this box ready to run llamadock's models on its NVIDIA GPU as a Swarm node? (`make swarm-doctor`)

Swarm services take no device requests, so llamadock hands a model its GPU with
NVIDIA_VISIBLE_DEVICES, which only the NVIDIA runtime reads, and only when it is the node's
default runtime. This checks that, the NVIDIA runtime's own config, and the driver, and prints
exactly what to change. Standard library only: it runs on a box that has no llamadock checkout's
virtualenv (`python3 scripts/swarm_doctor.py`). ``check`` is pure (tests/unit/test_swarm_doctor.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the runtime's config is then not read
    tomllib = None

DAEMON_JSON = Path("/etc/docker/daemon.json")
RUNTIME_CONFIG = Path("/etc/nvidia-container-runtime/config.toml")
ENVVAR_KEY = "accept-nvidia-visible-devices-envvar-when-unprivileged"
RESTART = "sudo systemctl restart docker"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    change: str = ""  # exactly what to do (empty when nothing)


@dataclass
class Report:
    gpu: bool  # the box has an NVIDIA driver (nvidia-smi lists a GPU)
    findings: list[Finding] = field(default_factory=list)
    daemon_json: str | None = None  # the whole daemon.json as it should be, when it must change

    @property
    def ready(self) -> bool:
        return all(f.ok for f in self.findings)


def fixed_daemon_json(current: dict) -> dict:
    """``current`` with the NVIDIA runtime registered and made the default (the rest kept)."""
    fixed = dict(current)
    runtimes = dict(fixed.get("runtimes") or {})
    nvidia = dict(runtimes.get("nvidia") or {})
    nvidia.setdefault("path", "nvidia-container-runtime")
    nvidia.setdefault("runtimeArgs", [])
    runtimes["nvidia"] = nvidia
    fixed["runtimes"] = runtimes
    fixed["default-runtime"] = "nvidia"
    return fixed


def check(daemon_json: str | None, runtime_config: str | None, gpus: str | None,
          runtime_binary_found: bool = True) -> Report:
    """``daemon_json``: /etc/docker/daemon.json's text (None: no such file); ``runtime_config``: the
    NVIDIA runtime's config.toml (None: none); ``gpus``: ``nvidia-smi -L``'s output (None: no
    nvidia-smi, or it failed); ``runtime_binary_found``: nvidia-container-runtime is on PATH."""
    listed = [line for line in (gpus or "").splitlines() if line.startswith("GPU ")]
    report = Report(gpu=bool(listed))
    add = report.findings.append
    if not listed:
        add(Finding(False, "No NVIDIA GPU: nvidia-smi is missing or lists none",
                    "Install the NVIDIA driver (nvidia-smi -L must list the GPU). A box without a GPU "
                    "still runs models on its CPU: label its memory budget instead "
                    "(docker node update --label-add llamadock.memory_mb=<MiB> <node>)."))
        return report  # a CPU node: nothing else here matters
    else:
        add(Finding(True, f"NVIDIA driver: {len(listed)} GPU(s): " + "; ".join(listed)))

    try:
        current = json.loads(daemon_json) if daemon_json and daemon_json.strip() else {}
        if not isinstance(current, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        add(Finding(False, f"{DAEMON_JSON} is not valid JSON ({exc}): Docker will not start with it",
                    "Fix its syntax first, then run this again."))
        return report
    runtimes = current.get("runtimes") or {}
    wrong = []
    if "nvidia" not in runtimes:
        wrong.append("the nvidia runtime is not registered")
    if current.get("default-runtime") != "nvidia":
        wrong.append(f"the default runtime is {current.get('default-runtime', 'runc')!r}, not 'nvidia' "
                     "(Swarm services cannot ask for a runtime, so only the default one applies)")
    if wrong:
        report.daemon_json = json.dumps(fixed_daemon_json(current), indent=2, sort_keys=True)
        add(Finding(False, f"{DAEMON_JSON}: " + "; ".join(wrong),
                    f"Write this as {DAEMON_JSON}, then `{RESTART}` (or `sudo nvidia-ctk runtime configure "
                    f"--runtime=docker --set-as-default` and `{RESTART}`):\n{report.daemon_json}"))
    else:
        add(Finding(True, f"{DAEMON_JSON}: nvidia is the default runtime"))
    if "node-generic-resources" in current:
        add(Finding(True, "node-generic-resources is set: llamadock does not use it (it hands out whole GPUs); "
                    "it is harmless"))

    if not runtime_binary_found:
        add(Finding(False, "nvidia-container-runtime is not on PATH",
                    "Install the NVIDIA Container Toolkit (package nvidia-container-toolkit)."))
    if runtime_config is None:
        add(Finding(True, f"{RUNTIME_CONFIG}: none (the toolkit's defaults honour NVIDIA_VISIBLE_DEVICES)"))
    elif tomllib is not None:
        try:
            config = tomllib.loads(runtime_config)
        except tomllib.TOMLDecodeError as exc:
            add(Finding(False, f"{RUNTIME_CONFIG} is not valid TOML ({exc})",
                        "Fix its syntax, or regenerate it: `sudo nvidia-ctk config --in-place --set "
                        f"{ENVVAR_KEY}=true`."))
            return report
        if config.get(ENVVAR_KEY, True) is False:
            add(Finding(False, f"{RUNTIME_CONFIG}: {ENVVAR_KEY} = false, so the runtime ignores "
                        "NVIDIA_VISIBLE_DEVICES and a model gets no GPU",
                        f"Set `{ENVVAR_KEY} = true` in {RUNTIME_CONFIG} (`sudo nvidia-ctk config --in-place "
                        f"--set {ENVVAR_KEY}=true`), then `{RESTART}`."))
        else:
            add(Finding(True, f"{RUNTIME_CONFIG}: NVIDIA_VISIBLE_DEVICES is honoured"))
        # A top-level key in the toolkit's sample config; some guides put it under its runtime's table.
        swarm_resource = config.get("swarm-resource") or (config.get("nvidia-container-runtime") or {}).get(
            "swarm-resource")
        if swarm_resource:
            add(Finding(True, f"swarm-resource = {swarm_resource!r} is set: that is the generic-resources method; "
                        "a llamadock service sets NVIDIA_VISIBLE_DEVICES, which the runtime reads when "
                        f"{swarm_resource} is absent, so it is harmless"))
    return report


def render(report: Report) -> str:
    lines = []
    for finding in report.findings:
        lines.append(f"{'ok ' if finding.ok else 'FIX'}  {finding.what}")
        if finding.change:
            lines += ["     " + line for line in finding.change.splitlines()]
    if report.ready:
        lines.append("This node can run llamadock's models on its GPU.")
    elif not report.gpu:
        lines.append("No GPU here: this node can run models on its CPU only.")
    else:
        lines.append("Change the above, then run `make swarm-doctor` again.")
    return "\n".join(lines)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> int:
    report = check(_read(DAEMON_JSON), _read(RUNTIME_CONFIG), _nvidia_smi(),
                   runtime_binary_found=shutil.which("nvidia-container-runtime") is not None)
    print(render(report))
    return 0 if report.ready or not report.gpu else 1


if __name__ == "__main__":
    sys.exit(main())
