"""Is a DICOM file whole? Checked before an image is acknowledged, because a modality deletes
its copy after 0x0000: that status must mean "this image can be read back".

The dataset is walked element by element in its transfer syntax, to its last byte, without
reading the values: every length must fit in what is left, every VR (explicit syntaxes) must
be a real one, sequences and items must close where they say (defined lengths) or with their
delimiters (undefined lengths), encapsulated pixel data must be a list of items ended by a
sequence delimiter, and uncompressed pixel data must be as long as rows × columns × samples ×
bits × frames say. Sequences may not nest deeper than :data:`MAX_SEQUENCE_DEPTH` (pydicom,
the pages and re-filing read them recursively).

What this caught that the header read did not (issue 13): truncated pixel data, PixelData
declaring 0x7FFFFFF0 bytes with 4 KiB sent, implicit-VR bytes sent in an explicit-VR context,
sequences nested 500 deep.
"""
from __future__ import annotations

import functools
import mmap
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import DicomDictionary, dictionary_VR, private_dictionary_VR

MAX_SEQUENCE_DEPTH = 32
#: A deflated dataset may expand to at most this many bytes (into the temporary area).
MAX_INFLATED_BYTES = 1 << 30

IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
#: Uncompressed syntaxes; every other one encapsulates its pixel data.
NATIVE = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, *DEFLATED)
VALID_VRS = frozenset(vr.encode() for vr in (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()))
LONG_VRS = frozenset(vr.encode() for vr in "OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
#: Binary VRs pydicom converts value by value: their length must be a multiple of the size, or
#: the element cannot be read back (an SL of 2 bytes raises BytesLengthException).
FIXED_SIZE = {b"AT": 4, b"FD": 8, b"FL": 4, b"SL": 4, b"SS": 2, b"UL": 4, b"US": 2, b"SV": 8, b"UV": 8}
SHORT_VRS = VALID_VRS - LONG_VRS
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
PIXEL_TAGS = frozenset((PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA))
#: The attributes the length of uncompressed pixel data follows from.
IMAGE_SIZE_TAGS = {0x00280002: "samples", 0x00280004: "photometric", 0x00280008: "frames", 0x00280010: "rows",
                   0x00280011: "columns", 0x00280100: "bits"}


#: Top-level elements whose place or value the pixel data check needs.
NOTED_TAGS = frozenset(IMAGE_SIZE_TAGS) | PIXEL_TAGS


class Malformed(ValueError):
    """The file is not a whole, readable dataset; the message says where and why."""


@dataclass(frozen=True)
class Walked:
    """What a whole file's walk leaves: its transfer syntax and the raw top-level elements asked
    for (tag → (VR or None in implicit VR, value bytes)), so the header need not be read again."""

    syntax: str
    kept: dict[int, tuple[str | None, bytes]]

    @property
    def implicit(self) -> bool:
        return self.syntax == IMPLICIT_LE

    @property
    def little_endian(self) -> bool:
        return self.syntax != EXPLICIT_BE


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> bytes | None:
    """The VR of a public element by the dictionary, repeating groups included (the smallest
    of "US or SS"); None when the dictionary does not know it."""
    try:
        return dictionary_VR(tag).split(" or ")[0].encode()
    except KeyError:
        return None


def _read_as(tag: int, vr: bytes | None, length: int, creators: dict[int, str]) -> bytes | None:
    """The VR pydicom converts an element's value with, for an element that came without one
    (implicit VR) or as UN, as its hooks decide (``raw_element_vr``): a private element by its
    creator's private dictionary, a public one by the dictionary, an even group's group length
    as UL. A length that does not fit that VR makes the file unreadable, so it must be found
    here. None: read as bytes, any length fits."""
    if (tag >> 16) & 1:
        element = tag & 0xFFFF
        if 0x10 <= element <= 0xFF:
            return b"LO"  # a private creator
        creator = creators.get((tag >> 16) << 8 | element >> 8) if element & 0xFF00 else None
        if creator:
            try:
                return private_dictionary_VR(tag, creator).split(" or ")[0].encode()
            except KeyError:
                return None
        return None
    if vr is None:
        found = _dictionary_vr(tag)
        return found if found is not None or tag & 0xFFFF else b"UL"
    return _dictionary_vr(tag) if length < 0xFFFF else None  # UN replaced by the known VR


def _is_sequence_in_dictionary(tag: int) -> bool:
    entry = DicomDictionary.get(tag)
    return entry is not None and entry[0] == "SQ"


class _Walker:
    """One pass over a dataset held in ``buf`` (a memory map or bytes)."""

    def __init__(self, buf: bytes | mmap.mmap, implicit: bool, little: bool, encapsulated: bool,
                 keep: frozenset[int] = frozenset()) -> None:
        self.buf = buf
        self.keep = keep
        self.kept: dict[int, tuple[str | None, bytes]] = {}
        self.implicit, self.encapsulated = implicit, encapsulated
        order = "<" if little else ">"
        self.tag_length = struct.Struct(order + "HHL")  # implicit: group, element, 4-byte length
        self.explicit = struct.Struct(order + "HH2sH")  # explicit: group, element, VR, short length
        self.short = struct.Struct(order + "H")
        self.long = struct.Struct(order + "L")
        self.image: dict[str, bytes] = {}
        self.pixel_length: tuple[int, int] | None = None  # (tag, length) of native pixel data

    # ------------------------------------------------------------ elements

    def _header(self, at: int, end: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, where the value starts) of the element at ``at``."""
        if end - at < 8:
            raise Malformed(f"{end - at} stray bytes at the end of the data set (offset {at})")
        if implicit:
            group, element, length = self.tag_length.unpack_from(self.buf, at)
            return (group << 16) | element, None, length, at + 8
        group, element, vr, length = self.explicit.unpack_from(self.buf, at)
        tag = (group << 16) | element
        if group == 0xFFFE:  # items and delimiters have no VR in any syntax
            return tag, None, self.long.unpack_from(self.buf, at + 4)[0], at + 8
        if vr not in VALID_VRS:
            raise Malformed(f"{_tag_text(tag)} has no valid VR (bytes {vr.hex(' ').upper()}) at offset {at}:"
                            " bytes of another transfer syntax (implicit VR?) or garbage")
        if vr in LONG_VRS:
            if end - at < 12:
                raise Malformed(f"{_tag_text(tag)} is cut off at offset {at}")
            return tag, vr, self.long.unpack_from(self.buf, at + 8)[0], at + 12
        return tag, vr, length, at + 8

    def dataset(self, at: int, end: int, depth: int, implicit: bool, item: bool = False) -> int:
        """Walk the elements from ``at`` to ``end``, or, for an item of undefined length
        (``item``), to its delimiter before ``end``. Returns where the dataset ends."""
        top = depth == 0
        header, buf, explicit = self._header, self.buf, self.explicit.unpack_from
        creators: dict[int, str] = {}  # this dataset's private creators: (group << 8 | block) → name
        while at < end:
            if not implicit and end - at >= 8:  # the common case inline: explicit VR, short length
                group, element, vr, length = explicit(buf, at)
                if vr in SHORT_VRS and group != 0xFFFE:
                    tag, value = (group << 16) | element, at + 8
                else:
                    tag, vr, length, value = header(at, end, implicit)
            else:
                tag, vr, length, value = header(at, end, implicit)
            if tag >= 0xFFFE0000:
                if tag == ITEM_END and item:
                    if length != 0:
                        raise Malformed(f"an item delimiter with length {length} at offset {at}")
                    return value
                raise Malformed(f"{_tag_text(tag)} where a data element was expected (offset {at})")
            if length == UNDEFINED:
                at = self._undefined(tag, vr, value, end, depth, implicit)
                continue
            if value + length > end:
                raise Malformed(f"{_tag_text(tag)} declares {length} bytes at offset {at} but only"
                                f" {end - value} remain: the data set is truncated")
            if (tag >> 16) & 1 and 0x10 <= tag & 0xFFFF <= 0xFF and length <= 64:
                creators[(tag >> 16) << 8 | tag & 0xFF] = bytes(buf[value:value + length]).decode("latin-1").strip(" \0")
            size = FIXED_SIZE.get(vr if vr is not None and vr != b"UN" else _read_as(tag, vr, length, creators))
            if size and length % size:
                raise Malformed(f"{_tag_text(tag)} has {length} bytes at offset {at}, not a multiple of the"
                                f" {size} bytes of one value: it cannot be read back")
            if vr == b"SQ" or (vr is None and _is_sequence_in_dictionary(tag)):
                self.sequence(value, value + length, depth + 1, implicit)
            elif top and tag in NOTED_TAGS:
                self._note_top(tag, value, length)
            elif top and tag in self.keep:
                self.kept[tag] = (vr.decode("ascii") if vr is not None else None, bytes(buf[value:value + length]))
            at = value + length
        if item:
            raise Malformed("an item of undefined length has no item delimiter: the data set is truncated")
        return at

    def _undefined(self, tag: int, vr: bytes | None, value: int, end: int, depth: int, implicit: bool) -> int:
        """An element of undefined length: a sequence, encapsulated pixel data, or an error."""
        if tag == PIXEL_DATA and vr in (b"OB", b"OW", None) and self.encapsulated:  # icons too
            return self.fragments(value, end)
        if vr == b"SQ" or vr is None:
            return self.sequence(value, end, depth + 1, implicit, undefined=True)
        if vr == b"UN":  # PS3.5 6.2.2: a sequence of unknown VR, encoded implicit VR little endian
            if not self.tag_length.format.startswith("<"):
                raise Malformed(f"{_tag_text(tag)}: UN of undefined length in a big endian data set")
            return self.sequence(value, end, depth + 1, implicit=True, undefined=True)
        raise Malformed(f"{_tag_text(tag)} ({vr.decode('ascii', 'replace')}) has an undefined length")

    def sequence(self, at: int, end: int, depth: int, implicit: bool, undefined: bool = False) -> int:
        """Walk a sequence's items; returns where it ends."""
        if depth > MAX_SEQUENCE_DEPTH:
            raise Malformed(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}")
        while at < end:
            tag, _, length, value = self._item(at, end)
            if tag == SEQUENCE_END and undefined:
                if length != 0:
                    raise Malformed(f"a sequence delimiter with length {length} at offset {at}")
                return value
            if tag != ITEM:
                raise Malformed(f"{_tag_text(tag)} where a sequence item was expected (offset {at})")
            if length == UNDEFINED:
                at = self.dataset(value, end, depth, implicit, item=True)
            else:
                if value + length > end:
                    raise Malformed(f"an item declares {length} bytes at offset {at} but only {end - value}"
                                    " remain: the data set is truncated")
                self.dataset(value, value + length, depth, implicit)
                at = value + length
        if undefined:
            raise Malformed("a sequence of undefined length has no sequence delimiter: the data set is truncated")
        return at

    def _item(self, at: int, end: int) -> tuple[int, None, int, int]:
        if end - at < 8:
            raise Malformed(f"{end - at} stray bytes where a sequence item was expected (offset {at})")
        group, element, length = self.tag_length.unpack_from(self.buf, at)
        return (group << 16) | element, None, length, at + 8

    def fragments(self, at: int, end: int) -> int:
        """Encapsulated pixel data: items (the offset table, then fragments) and the delimiter."""
        items = 0
        while at < end:
            tag, _, length, value = self._item(at, end)
            if tag == SEQUENCE_END:
                if items < 2:
                    raise Malformed("encapsulated pixel data without a fragment")
                return value
            if tag != ITEM or length == UNDEFINED:
                raise Malformed(f"{_tag_text(tag)} in encapsulated pixel data at offset {at}")
            if value + length > end:
                raise Malformed(f"a pixel data fragment declares {length} bytes at offset {at} but only"
                                f" {end - value} remain: the data set is truncated")
            items += 1
            at = value + length
        raise Malformed("encapsulated pixel data has no sequence delimiter: the data set is truncated")

    # ------------------------------------------------------------ the image's size

    def _note_top(self, tag: int, value: int, length: int) -> None:
        name = IMAGE_SIZE_TAGS.get(tag)
        if name is not None:
            self.image[name] = bytes(self.buf[value:value + length])
        else:
            self.pixel_length = (tag, length)

    def _number(self, name: str, default: int | None) -> int:
        raw = self.image.get(name)
        if raw is None or raw == b"":
            if default is None:
                raise Malformed(f"pixel data without {name}: the image size is unknown")
            return default
        if name == "frames":  # IS: a decimal string
            try:
                return int(raw.decode("ascii").strip(" \0") or default or 1)
            except ValueError:
                raise Malformed(f"NumberOfFrames {raw[:16]!r} is not a number") from None
        if len(raw) < 2:
            raise Malformed(f"{name} has {len(raw)} bytes")
        return self.short.unpack_from(raw, 0)[0]

    def check_pixel_length(self) -> None:
        if self.pixel_length is None:
            return
        tag, length = self.pixel_length
        if tag == PIXEL_DATA and self.encapsulated:
            raise Malformed("native (not encapsulated) pixel data in a compressed transfer syntax")
        bits = {FLOAT_PIXEL_DATA: 32, DOUBLE_PIXEL_DATA: 64}.get(tag) or self._number("bits", None)
        samples = self._number("samples", 1)
        if samples == 3 and self.image.get("photometric", b"").strip(b" \0") == b"YBR_FULL_422":
            samples = 2  # two pixels share one Cb and one Cr (PS3.3 C.7.6.3.1.2)
        needed = (self._number("rows", None) * self._number("columns", None) * samples
                  * self._number("frames", 1) * bits + 7) // 8
        if length < needed:
            raise Malformed(f"pixel data has {length} bytes of the {needed} its rows, columns, samples, bits"
                            " and frames need: truncated")


# ---------------------------------------------------------------- the file

def _meta_end_and_syntax(buf: mmap.mmap) -> tuple[int, str]:
    """Where the file meta information (explicit VR little endian, group 0002) ends, and the
    transfer syntax it names."""
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Malformed("no DICOM preamble and prefix")
    walker = _Walker(buf, implicit=False, little=True, encapsulated=False)
    at, syntax = 132, ""
    while at + 8 <= len(buf) and walker.short.unpack_from(buf, at)[0] == 0x0002:
        tag, _, length, value = walker._header(at, len(buf), implicit=False)
        if length == UNDEFINED or value + length > len(buf):
            raise Malformed("the file meta information is truncated")
        if tag == 0x00020010:
            syntax = bytes(buf[value:value + length]).decode("ascii", "replace").strip(" \0")
        at = value + length
    if not syntax:
        raise Malformed("no transfer syntax in the file meta information")
    return at, syntax


def _inflate(buf: mmap.mmap, at: int, folder: Path) -> Path:
    """A deflated dataset, inflated into a temporary file (never into memory)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    handle = tempfile.NamedTemporaryFile(dir=folder, suffix=".inflated", delete=False)
    written = 0
    try:
        with handle:
            for start in range(at, len(buf), 1 << 20):
                data = inflater.decompress(buf[start:start + (1 << 20)], MAX_INFLATED_BYTES + 1 - written)
                while data:
                    written += len(data)
                    if written > MAX_INFLATED_BYTES:
                        raise Malformed(f"the deflated data set expands beyond {MAX_INFLATED_BYTES} bytes")
                    handle.write(data)
                    data = inflater.decompress(inflater.unconsumed_tail, MAX_INFLATED_BYTES + 1 - written)
            handle.write(inflater.flush())
    except zlib.error as exc:
        os.unlink(handle.name)
        raise Malformed(f"the deflated data set cannot be inflated: {exc}") from exc
    except BaseException:
        os.unlink(handle.name)
        raise
    return Path(handle.name)


def _walk(buf: bytes | mmap.mmap, at: int, syntax: str, keep: frozenset[int]) -> dict[int, tuple[str | None, bytes]]:
    walker = _Walker(buf, implicit=syntax == IMPLICIT_LE, little=syntax != EXPLICIT_BE,
                     encapsulated=syntax not in NATIVE, keep=keep)
    walker.dataset(at, len(buf), 0, walker.implicit)
    walker.check_pixel_length()
    return walker.kept


def check_file(path: str | Path, keep: frozenset[int] = frozenset()) -> Walked:
    """Raise :class:`Malformed` unless the Part 10 file at ``path`` parses to its last byte;
    return its transfer syntax and the top-level elements in ``keep`` (raw)."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise Malformed("an empty file") from None
    with buf:
        at, syntax = _meta_end_and_syntax(buf)
        if syntax not in DEFLATED:
            return Walked(syntax, _walk(buf, at, syntax, keep))
        inflated = _inflate(buf, at, path.parent)
    try:
        with open(inflated, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise Malformed("the deflated data set is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return Walked(syntax, _walk(data, 0, EXPLICIT_LE, keep))
    finally:
        inflated.unlink(missing_ok=True)
