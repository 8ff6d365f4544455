"""Files replaced whole or not at all: the catalog, the learned GPU overheads and the CLI's saved
sessions are read by people and by other processes, and a crash or a full disk mid-write must
leave the old file, never half of a new one."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644) -> Path:
    """Replace the file at ``path`` with ``data`` (str is written as UTF-8); returns the path written.

    The data goes to a temporary file in the same directory (so the rename stays on one
    filesystem), is fsynced, and is renamed over the target: readers see the old file or the new
    one. A symlink is followed (what it points to is replaced, not the link). The replaced file's
    permission bits, and its owner where we may set it, are kept; a new file gets ``mode`` (not
    mkstemp's 0600, which would hide a file a container writes from the user who owns it).
    On failure the temporary file is removed and the OSError raised: callers decide what it means.
    """
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, stat.S_IMODE(old.st_mode) if old else mode)
        if old:
            # Run as root in a container, we would otherwise leave the user a file they cannot edit.
            with contextlib.suppress(PermissionError):
                os.chown(temp, old.st_uid, old.st_gid)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)
    return target


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced (an atomic write gives it a new inode); None
    if absent or unreadable. A file is parsed again only when its stamp changes."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform lets a directory be opened for this."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
