"""multipart/related bodies (RFC 2387) as DICOMweb uses them, both ways, streamed: a response
is written part by part from the stored files, a request is split part by part into files,
so neither a study nor an upload is ever held whole in memory."""
from __future__ import annotations

import bisect
import io
import re
import uuid
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from werkzeug.http import parse_list_header

CHUNK = 1024 * 1024
#: The most a part's headers (or the preamble before the first part) may take.
MAX_HEADER_BYTES = 16 * 1024
#: One ``;``-separated piece of a media type: quoted strings kept whole.
_PARAMETER = re.compile(r';((?:[^;"]|"(?:[^"\\]|\\.)*")*)')


class MultipartError(ValueError):
    """The body is not the multipart/related it says it is."""


def new_boundary() -> str:
    return uuid.uuid4().hex


def media_type(text: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type=application/dicom; boundary="x"`` → the type and its parameters.
    Values may be quoted or not: OHIF sends ``type=application/octet-stream`` bare, which the
    HTTP token grammar (and werkzeug's parser) would cut at the ``/``."""
    pieces = [piece.strip() for piece in _PARAMETER.findall(";" + text)]
    params = {}
    for piece in pieces[1:]:
        name, equals, value = piece.partition("=")
        if equals:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            params[name.strip().lower()] = value
    return (pieces[0].lower() if pieces else ""), params


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """An Accept header as (media type, parameters) pairs, in the order given; ``*/*`` if empty."""
    ranges = []
    for item in parse_list_header(accept or "*/*"):
        kind, params = media_type(item)
        if kind:
            ranges.append((kind, params))
    return ranges


def write(parts: Iterable[tuple[str, Path | bytes]], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related response: each (content type, file or bytes) a part."""
    for piece in pieces(parts, boundary):
        if isinstance(piece, Path):
            with open(piece, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        else:
            yield piece


class Concatenation(io.RawIOBase):
    """Byte strings and whole files read as one seekable file, without copying them anywhere
    first: a multipart body of stored files that the HTTP server sends itself
    (``wsgi.file_wrapper``), with its length known before the first byte goes."""

    def __init__(self, pieces: Iterable[bytes | Path]) -> None:
        super().__init__()
        self.pieces: list[bytes | Path] = []
        self.starts: list[int] = []
        size = 0
        for piece in pieces:
            self.pieces.append(piece)
            self.starts.append(size)
            size += len(piece) if isinstance(piece, bytes) else piece.stat().st_size
        self.size, self.position = size, 0
        self._open: tuple[int, BinaryIO] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = min(max(base + offset, 0), self.size)
        return self.position

    def read(self, size: int = -1) -> bytes:
        wanted = self.size - self.position if size is None or size < 0 else min(size, self.size - self.position)
        chunks, got = [], 0
        while got < wanted:
            chunk = self._read_piece(wanted - got)
            chunks.append(chunk)
            got += len(chunk)
            self.position += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _read_piece(self, most: int) -> bytes:
        """Up to ``most`` bytes from the piece the position is in (never past its end)."""
        index = bisect.bisect_right(self.starts, self.position) - 1
        inside = self.position - self.starts[index]
        piece = self.pieces[index]
        if isinstance(piece, bytes):
            return piece[inside:inside + most]
        handle = self._handle(index, piece)
        if handle.tell() != inside:
            handle.seek(inside)
        chunk = handle.read(min(most, self._end(index) - self.position))
        if not chunk:
            raise OSError(f"{piece} ended early")
        return chunk

    def _end(self, index: int) -> int:
        return self.starts[index + 1] if index + 1 < len(self.starts) else self.size

    def _handle(self, index: int, path: Path) -> BinaryIO:
        if self._open is None or self._open[0] != index:
            self._close_handle()
            self._open = (index, open(path, "rb"))
        return self._open[1]

    def _close_handle(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_handle()
        super().close()


def pieces(parts: Iterable[tuple[str, Path | bytes]], boundary: str) -> Iterator[bytes | Path]:
    """The multipart body of :func:`write` as byte strings and files, for :class:`Concatenation`."""
    for content_type, body in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


class _Reader:
    """A body read in chunks into a buffer that keeps only what is not yet consumed."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.ended = False

    def more(self) -> bool:
        chunk = b"" if self.ended else self.stream.read(CHUNK)
        if not chunk:
            self.ended = True
            return False
        self.buffer += chunk
        return True

    def until(self, marker: bytes, limit: int, what: str) -> bytes:
        """Everything before ``marker`` (which is consumed too); at most ``limit`` bytes."""
        while True:
            at = self.buffer.find(marker, 0, limit + len(marker))
            if at >= 0:
                found = bytes(self.buffer[:at])
                del self.buffer[:at + len(marker)]
                return found
            if len(self.buffer) > limit + len(marker):
                raise MultipartError(f"the {what} is longer than {limit} bytes")
            if not self.more():
                raise MultipartError(f"the body ends inside the {what}")

    def need(self, count: int) -> bytes:
        while len(self.buffer) < count and self.more():
            pass
        return bytes(self.buffer[:count])


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"not a header line: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def read(stream: BinaryIO, boundary: str, directory: Path,
         max_parts: int = 0) -> Iterator[tuple[dict[str, str], Path]]:
    """Each part of a multipart body with its headers, written to a new file in ``directory``.
    The caller owns the file (and removes it) before asking for the next part. A part beyond
    ``max_parts`` (0: no limit) is not read: MultipartError."""
    if not boundary or len(boundary) > 70:
        raise MultipartError("the Content-Type names no usable boundary")
    reader = _Reader(stream)
    reader.buffer += b"\r\n"  # the first delimiter may open the body, without a line break before it
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    reader.until(delimiter, MAX_HEADER_BYTES, "preamble")
    parts = 0
    while True:
        after = reader.need(2)
        if after == b"--":
            return
        parts += 1
        if max_parts and parts > max_parts:
            raise MultipartError(f"more than {max_parts} parts in one request")
        reader.buffer[:] = reader.buffer.lstrip(b" \t")
        if reader.need(2) != b"\r\n":
            raise MultipartError("a boundary is not followed by a line break")
        del reader.buffer[:2]
        if reader.need(2) == b"\r\n":
            headers: dict[str, str] = {}
            del reader.buffer[:2]
        else:
            headers = _headers(reader.until(b"\r\n\r\n", MAX_HEADER_BYTES, "part's headers"))
        path = directory / f"{uuid.uuid4().hex}.part"
        try:
            _copy_body(reader, delimiter, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        yield headers, path


def _copy_body(reader: _Reader, delimiter: bytes, path: Path) -> None:
    """The part's body, up to the next delimiter, into ``path``."""
    keep = len(delimiter) - 1
    with open(path, "xb") as out:
        while True:
            at = reader.buffer.find(delimiter)
            if at >= 0:
                out.write(reader.buffer[:at])
                del reader.buffer[:at + len(delimiter)]
                return
            if len(reader.buffer) > keep:
                out.write(reader.buffer[:-keep])
                del reader.buffer[:-keep]
            if not reader.more():
                raise MultipartError("the body ends inside a part: no closing boundary")
