"""Reading a text file ingest was handed: refused when empty, binary or not decodable, with the reason."""

from __future__ import annotations

import codecs
from pathlib import Path

from ingest.errors import IngestError

_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def read_bytes(path: Path, kind: str) -> bytes:
    """The file's bytes; IngestError when it cannot be read, is empty, or is binary (a NUL byte early on,
    unless a byte-order mark says UTF-16, whose text has NULs)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not data.strip():
        raise IngestError(path, "empty file")
    nul = data.find(b"\x00", 0, 8192)
    if nul >= 0 and not data.startswith(_BOMS[1:]):
        raise IngestError(path, f"binary file, not {kind} text (NUL byte at offset {nul})")
    return data


def read_utf8(path: Path, kind: str) -> str:
    """The file as UTF-8 text (a byte-order mark is dropped); IngestError naming the first bad byte."""
    data = read_bytes(path, kind)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from exc


__all__ = ["read_bytes", "read_utf8"]
