"""A llama-server slot file as the gateway reads it: the tokens from its header, its checksum.

The layout (llama.cpp ``llama_state_seq_save_file``, state format 3): u32 magic ``ggsq``, u32
version, u32 count, that many int32 "tokens", then the KV state. llama-server stores its token
list there packed: -1, format 1, the token count, the tokens, the count of media chunks (and the
chunks); older servers stored the plain token list.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import zlib
from array import array
from pathlib import Path

MAGIC = 0x67677371  # 'ggsq'
STATE_VERSION = 3
TOKEN_NULL = -1  # the marker of llama-server's packed token list
PACKED_VERSION = 1
CHUNK = 16 * 2**20


class CorruptFile(ValueError):
    """Not a slot file this gateway can vouch for."""


def unpack_tokens(packed: array) -> array:
    """The token list of a slot file's packed prompt; CorruptFile if it is not one, or holds media
    (an image's tokens are not text: restoring them is left to a client that sends them again)."""
    if not packed or packed[0] != TOKEN_NULL:
        return packed  # a plain token list (older llama-server)
    if len(packed) < 3 or packed[1] != PACKED_VERSION:
        raise CorruptFile("unknown packed token format")
    n = packed[2]
    if n < 0 or 3 + n + 1 > len(packed):
        raise CorruptFile("token count beyond the packed list")
    if packed[3 + n] != 0:
        raise CorruptFile("holds media chunks")
    return packed[3:3 + n]


def read_tokens(path: Path) -> array:
    """The tokens a slot file holds, from its header alone."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            if len(head) < 12:
                raise CorruptFile("shorter than a header")
            magic, version, count = struct.unpack("<III", head)
            if magic != MAGIC:
                raise CorruptFile("not a slot file (magic)")
            if version != STATE_VERSION:
                raise CorruptFile(f"state format {version}, not {STATE_VERSION}")
            size = os.fstat(file.fileno()).st_size
            if 12 + 4 * count > size:
                raise CorruptFile("token count beyond the file's end")
            packed = array("i")
            packed.frombytes(file.read(4 * count))
    except OSError as exc:
        raise CorruptFile(f"unreadable ({exc.strerror or exc})") from None
    if sys.byteorder != "little":
        packed.byteswap()
    return unpack_tokens(packed)


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def tokens_digest(tokens: array) -> str:
    return hashlib.sha256(tokens.tobytes()).hexdigest()[:16]
