"""The catalog on a full and on a read-only filesystem: the stack's config/ is a 64 KiB
tmpfs (mounted before `make up`, so the orchestrator's bind mount is that tmpfs), filled
up with a file, or remounted read-only. An add or a removal then gets a clear error, the
old catalog stays byte for byte, and no container is left behind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from support.faults import containers_of
from support.stack import Stack, local_llama_image, require_docker

require_docker()
pytestmark = pytest.mark.docker

if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs for the catalog needs root", allow_module_level=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    stack = Stack(tmp_path_factory.mktemp("fs"), llama_image=local_llama_image())
    catalog = stack.config / "models.yaml"
    text = catalog.read_bytes() if catalog.exists() else b"models: {}\n"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "llamadock-faults", str(stack.config)],
                   check=True)
    try:
        catalog.write_bytes(text)
        shutil.copy(tiny_models["tiny-a"], stack.models / "tiny.gguf")
        shutil.copy(tiny_models["tiny-b"], stack.models / "other.gguf")
        stack.run("make", "up")
        stack.admin.post("/admin/models", json={"name": "tiny", "model": "tiny.gguf"}).raise_for_status()
        yield stack
    finally:
        stack.force_down()
        subprocess.run(["umount", str(stack.config)], check=False)


@contextmanager
def full(directory: Path):
    """Fill the filesystem of ``directory`` to the last byte; free it again afterwards."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as raised:
            while True:
                os.write(fd, b"\0" * 4096)
        assert raised.value.errno == errno.ENOSPC
        with pytest.raises(OSError):  # not even one byte in a new file
            (directory / "probe").write_bytes(b"x")
        yield
    finally:
        os.close(fd)
        filler.unlink()
        (directory / "probe").unlink(missing_ok=True)


@contextmanager
def read_only(directory: Path):
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
    try:
        with pytest.raises(OSError) as raised:
            (directory / "probe").write_bytes(b"x")
        assert raised.value.errno == errno.EROFS
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=True)


FILESYSTEMS = {"full": (full, 507, "catalog_storage_full"), "read-only": (read_only, 503, "catalog_not_writable")}


def chat(stack: Stack, model: str) -> httpx.Response:
    return httpx.post(stack.url + "/v1/chat/completions", timeout=120,
                      json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("kind", FILESYSTEMS)
def test_add_gets_a_clear_error_and_the_catalog_is_intact(stack, fault_report, kind):
    condition, status, code = FILESYSTEMS[kind]
    before = (stack.config / "models.yaml").read_bytes()
    with condition(stack.config):
        refused = stack.admin.post("/admin/models", json={"name": "more", "model": "other.gguf"})
        assert refused.status_code == status, refused.text
        error = refused.json()["error"]
        assert error["code"] == code and "catalog" in error["message"] and "unchanged" in error["message"]
        assert (stack.config / "models.yaml").read_bytes() == before
        assert containers_of(stack.project, "more") == []
        # `make add` says the same, and fails.
        cli = stack.run("make", "add", "NAME=more2", "MODEL=other.gguf", check=False)
        said = " ".join((cli.stdout + cli.stderr).split())  # the terminal may wrap the message
        assert cli.returncode != 0 and "could not be saved" in said, said
        assert containers_of(stack.project, "more2") == []
        assert (stack.config / "models.yaml").read_bytes() == before
        # What is declared is still served.
        assert chat(stack, "tiny").status_code == 200
    freed = time.monotonic()
    added = stack.admin.post("/admin/models", json={"name": "more", "model": "other.gguf"})
    assert added.status_code == 201, added.text
    assert stack.admin.delete("/admin/models/more").status_code == 200
    assert (stack.config / "models.yaml").read_bytes() == before
    fault_report(f"catalog on a {kind} filesystem: add", f"{status} {code} (API), `make add` exit "
                 f"{cli.returncode} with the message", time.monotonic() - freed,
                 "nothing (catalog byte-identical, no container)")


def test_removal_on_a_full_filesystem_keeps_the_model_declared(stack, fault_report):
    before = (stack.config / "models.yaml").read_bytes()
    with full(stack.config):
        refused = stack.admin.delete("/admin/models/tiny")
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "catalog_storage_full"
        assert (stack.config / "models.yaml").read_bytes() == before
        # Still declared, so still served: started again on demand if its container went.
        started = time.monotonic()
        assert chat(stack, "tiny").status_code == 200
        routable_s = time.monotonic() - started
    fault_report("catalog on a full filesystem: removal", "507 catalog_storage_full", routable_s,
                 "nothing (still declared and served; the removal can be retried)")
