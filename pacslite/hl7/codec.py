"""HL7 v2 as bytes and back: the character set (MSH-18), parsing with python-hl7, reading a
field, and the acknowledgement (MSA, ERR) pacslite answers with."""
from __future__ import annotations

import codecs
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import hl7

from ..core import clock
from ..ris import messages

#: MSH-18 values (HL7 table 0211, and the spellings HIS vendors use) → Python codecs. GB 18030
#: covers GBK and GB 2312, which Chinese systems often name instead.
CHARSETS = {
    "ASCII": "ascii", "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/5": "iso8859-5", "8859/7": "iso8859-7",
    "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UTF8": "utf-8",
    "GB 18030-2000": "gb18030", "GB18030": "gb18030", "GB 18030": "gb18030", "GBK": "gb18030", "GB2312": "gb18030",
    "BIG-5": "big5", "BIG5": "big5",
}
#: A Python codec's name for MSH-18 of what pacslite sends.
DECLARED = {"utf-8": "UNICODE UTF-8", "gb18030": "GB 18030-2000", "ascii": "ASCII", "latin-1": "8859/1",
            "big5": "BIG-5"}
START, END = b"\x0b", b"\x1c\r"


class Unreadable(messages.Refused):
    """The bytes are no HL7 message pacslite can read: answered AR."""

    def __init__(self, message: str, error_code: str = messages.DATA_TYPE, field: str = "") -> None:
        super().__init__(messages.REJECTED, error_code, message, field)


def codec_of(name: str) -> str:
    """The Python codec for an MSH-18 value or a configured name; Unreadable when unknown."""
    key = name.strip().upper()
    found = CHARSETS.get(key)
    if found is None:
        try:
            found = codecs.lookup(name.strip()).name
        except LookupError:
            raise Unreadable(f"character set {name!r} (MSH-18) is not supported", messages.TABLE_VALUE,
                             "MSH-18") from None
    return found


@dataclass(frozen=True)
class Received:
    """A message as read: its parsed form, the header that identifies it, its version and
    the characters its MSH-18 declared (echoed in the answer)."""

    message: Any
    header: messages.Header
    version: str
    declared: str


def _first_segment(raw: bytes) -> bytes:
    return re.split(rb"[\r\n]", raw, maxsplit=1)[0]


def header_fields(raw: bytes) -> list[str]:
    """MSH's fields as text (MSH-n is item n - 1), read before the message is decoded: they are
    ASCII in any character set HL7 allows. Unreadable when the message does not start with MSH."""
    first = _first_segment(raw.lstrip(b"\r\n"))
    if len(first) < 8 or not first.startswith(b"MSH"):
        raise Unreadable("the message does not begin with an MSH segment", messages.REQUIRED_MISSING, "MSH")
    separator = first[3:4]
    return [part.decode("latin-1") for part in first.split(separator)]


def decode(raw: bytes, default_charset: str) -> tuple[str, str, str]:
    """The message as text, the codec used and MSH-18 as declared: by MSH-18's first
    repetition, else ``default_charset``. Unreadable when the bytes are not in that set."""
    fields = header_fields(raw)
    declared = fields[17].split(fields[1][1:2] or "~")[0].strip() if len(fields) > 17 and len(fields[1]) > 1 else ""
    codec = codec_of(declared or default_charset)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        raise Unreadable(f"the message is not valid {declared or default_charset} text", messages.DATA_TYPE,
                         "MSH-18") from None
    return text.lstrip("\r\n"), codec, declared


def read(raw: bytes, default_charset: str) -> Received:
    """Decode and parse a message; Unreadable, with the reason, when it cannot be."""
    text, codec, declared = decode(raw, default_charset)
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        message = hl7.parse(text)
        msh = message.segment("MSH")
    except Exception as exc:  # python-hl7 raises several kinds on a broken message
        raise Unreadable(f"the message cannot be parsed: {exc}", messages.DATA_TYPE) from None
    sender = "^".join(value for value in (field(msh, 3), field(msh, 4)))
    control_id, kind = field(msh, 10), "^".join(v for v in (field(msh, 9), field(msh, 9, 2)) if v)
    if not control_id:
        raise Unreadable("MSH-10 (message control ID) is empty", messages.REQUIRED_MISSING, "MSH-10")
    if not field(msh, 9):
        raise Unreadable("MSH-9 (message type) is empty", messages.REQUIRED_MISSING, "MSH-9")
    return Received(message, messages.Header(sender, control_id, kind, codec), field(msh, 12), declared)


def field(segment: Any, number: int, component: int = 1, repetition: int = 1, subcomponent: int = 1) -> str:
    """One value of a segment as text, unescaped; "" when the message does not carry it. HL7's
    explicit null ``""`` comes back as ``""`` (two quotes): see :func:`present`."""
    value: Any = segment
    try:
        for index in (number, repetition, component, subcomponent):
            if isinstance(value, str):  # python-hl7 gives a plain string where a level has one value
                if index != 1:
                    return ""
                continue
            value = value(index)
    except (IndexError, KeyError, TypeError):
        return ""
    text = str(value)
    return unescape(text) if "\\" in text else text


def repetitions(segment: Any, number: int) -> int:
    try:
        return len(segment(number))
    except (IndexError, KeyError, TypeError):
        return 0


def segments(message: Any, name: str) -> list[Any]:
    try:
        return list(message.segments(name))
    except KeyError:
        return []


def present(value: str) -> str | None:
    """A carried value as a domain field: "" (HL7 ``""``, clear it) or the text; None when the
    message did not carry it (change nothing)."""
    if value == '""':
        return ""
    return value or None


_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def unescape(text: str) -> str:
    r"""HL7's escapes (\F\ \S\ \T\ \R\ \E\, and \.br\ as a line break) as the characters they stand for."""
    return re.sub(r"\\([FSTRE]|\.br)\\", lambda m: "\n" if m.group(1) == ".br" else _ESCAPES[m.group(1)], text)


def escape(value: Any) -> str:
    """A value to put in a field: the separators escaped, line breaks as \\.br\\."""
    text = str(value)
    text = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
    text = text.replace("~", "\\R\\").replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\\.br\\")


def timestamp(tz_name: str, moment: datetime | None = None) -> str:
    """An HL7 TS in the department's zone (TIMEZONE), with its offset."""
    return (moment or datetime.now(timezone.utc)).astimezone(clock.zone(tz_name)).strftime("%Y%m%d%H%M%S%z")


def segment(*fields: Any) -> str:
    """A segment from its name and fields, each a value (escaped) or a list of components."""
    parts = []
    for value in fields[1:]:
        if isinstance(value, (list, tuple)):
            parts.append("^".join(escape(v) for v in value))
        else:
            parts.append(escape(value) if value is not None else "")
    return "|".join([str(fields[0]), *parts]).rstrip("|")


def msh(settings: Mapping[str, Any], receiver: tuple[str, str], kind: list[str], control_id: str, version: str,
        declared: str, processing: str = "P") -> str:
    """pacslite's MSH: its application and facility, to ``receiver`` (application, facility)."""
    return "|".join(["MSH", "^~\\&", escape(settings["HL7_APPLICATION"]), escape(settings["HL7_FACILITY"]),
                     escape(receiver[0]), escape(receiver[1]), timestamp(settings["TIMEZONE"]), "", "^".join(kind),
                     control_id,
                     processing or "P", version or "2.4", "", "", "", "", "", escape(declared)]).rstrip("|")


def ack(settings: Mapping[str, Any], raw: bytes, received: Received | None, outcome: messages.Outcome,
        locations: Mapping[str, str]) -> bytes:
    """The acknowledgement of a message (original mode): MSH, MSA with the code and the reason,
    ERR for AE and AR (its form as the message's version has it). Encoded as the message was
    (ASCII when it could not be read). ``locations`` says where a domain field is in the
    message (``name`` → ``PID^1^5``)."""
    try:
        fields = header_fields(raw)
    except Unreadable:
        fields = []

    def msh_field(n: int) -> str:
        return fields[n - 1] if len(fields) >= n else ""

    version = received.version if received else msh_field(12).split("^")[0] or "2.4"
    codec, declared = (received.header.charset, received.declared) if received else ("ascii", "")
    control = received.header.control_id if received else msh_field(10)
    trigger = msh_field(9).split("^")[1] if "^" in msh_field(9) else ""
    lines = [msh(settings, (msh_field(3), msh_field(4)), ["ACK", escape(trigger), "ACK"], uuid.uuid4().hex[:20],
                 version, declared, msh_field(11).split("^")[0]),
             segment("MSA", outcome.code, control, outcome.error[:80])]
    if outcome.code != messages.ACCEPTED:
        where = locations.get(outcome.field, outcome.field)
        found = re.fullmatch(r"([A-Z][A-Z0-9]{2})(?:-(\d+))?", where)
        place = [found.group(1), "1", found.group(2) or ""] if found else ["", "", ""]
        if version < "2.5":  # ERR-1: segment^sequence^field^code&text&table
            lines.append(f"ERR|{'^'.join(place)}^{outcome.error_code}&{escape(outcome.error[:200])}&HL70357")
        else:
            lines.append(segment("ERR", "", place if found else "",
                                 [outcome.error_code, outcome.error[:200], "HL70357"], "E", "", "", "",
                                 outcome.error[:1000]))
    try:
        return "\r".join(lines).encode(codec) + b"\r"
    except UnicodeEncodeError:
        return "\r".join(lines).encode(codec, errors="replace") + b"\r"


def ack_code(ack: bytes) -> str:
    """MSA-1 of an acknowledgement pacslite made."""
    for line in ack.split(b"\r"):
        if line.startswith(b"MSA|"):
            return line.split(b"|")[1].decode("ascii", "replace")
    return ""
