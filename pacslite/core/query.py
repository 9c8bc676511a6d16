"""Matching of DICOM query keys (PS3.4 C.2.2.2): the one engine for every C-FIND pacslite
answers (the modality worklist now; Query/Retrieve and QIDO-RS use the same functions).

Single value, universal (empty or ``*``), wildcard (``*`` and ``?``), date range, and person
names with pinyin. Wildcards never become regular expressions: a backtracking regex turns
``********#`` into exponential work that holds the interpreter lock and freezes every page.
:func:`wildcard_match` instead matches the pieces between the stars from left to right, each
at its leftmost place, which is correct for ``*`` and bounded by the length of the value
times the length of the pattern.
"""
from __future__ import annotations

from datetime import date, datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from . import names

#: Longer query values are refused (0xA900): no DICOM string VR is longer than 64 characters
#: per component (a PN has three groups), so anything this long is not a real query.
MAX_QUERY_LENGTH = 1024


class QueryError(ValueError):
    """The identifier cannot be answered (a malformed date range, an absurd value, …)."""


def _piece_at(piece: str, value: str, at: int) -> bool:
    """Whether ``piece`` (letters and ``?``) matches ``value`` starting at ``at``."""
    if at < 0 or at + len(piece) > len(value):
        return False
    return all(p == "?" or p == value[at + i] for i, p in enumerate(piece))


def _find_piece(piece: str, value: str, start: int, end: int) -> int:
    """The leftmost position ≥ start where ``piece`` matches and ends by ``end``, or -1."""
    if "?" not in piece:
        return value.find(piece, start, end)
    for at in range(start, end - len(piece) + 1):
        if _piece_at(piece, value, at):
            return at
    return -1


def wildcard_match(pattern: str, value: str) -> bool:
    """``pattern`` (with ``*`` any run and ``?`` any one character) matches all of ``value``."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return len(pattern) == len(value) and _piece_at(pattern, value, 0)
    first, *middle, last = pieces
    if len(first) + len(last) > len(value):
        return False
    if not _piece_at(first, value, 0) or not _piece_at(last, value, len(value) - len(last)):
        return False
    position, end = len(first), len(value) - len(last)
    for piece in middle:
        if not piece:
            continue
        found = _find_piece(piece, value, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def check_length(query: str) -> str:
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryError(f"a query value of {len(query)} characters")
    return query


def matches_text(query: str, value: str, *, ignore_case: bool = False) -> bool:
    """Single value or wildcard matching; an empty query matches everything."""
    if not query or query == "*":
        return True
    check_length(query)
    if ignore_case:
        query, value = query.casefold(), value.casefold()
    if "*" in query or "?" in query:
        return wildcard_match(query, value)
    return query == value


def matches_name(query: str, registered: str) -> bool:
    """A PN query against a registered name: every given component group must match its form.

    Letters match the pinyin form (``ZHANG^SAN``, with or without the ``^``), case-insensitive;
    ideographs match the ideographic form (``张^三`` or ``张三``).
    """
    groups = [g for g in check_length(query).split("=") if g and g != "*"]
    if not groups:
        return True
    alphabetic = names.dicom_person_name(registered, with_ideographs=False)
    if names.is_chinese(registered):
        surname, given = names.split_chinese(registered)
        ideographic = [f"{surname}^{given}", f"{surname}{given}"]
    else:
        ideographic = []
    letters = [alphabetic, alphabetic.replace("^", ""), registered]
    return all(any(matches_text(group, c, ignore_case=True)
                   for c in (ideographic if names.is_chinese(group) else letters))
               for group in groups)


def _parse_date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise QueryError(f"not a DICOM date: {text[:20]!r}") from None


def date_range(query: str) -> tuple[date | None, date | None]:
    """``20261124`` → (d, d); ``20261124-20261130``, ``-20261130``, ``20261124-`` → open or closed range."""
    query = query.strip()
    if not query:
        return None, None
    if "-" not in query:
        day = _parse_date(query)
        return day, day
    start, _, end = query.partition("-")
    return (_parse_date(start) if start else None), (_parse_date(end) if end else None)


def restrict(full: Dataset, requested: Dataset, top: bool = True) -> Dataset:
    """An answer with only the keys the query asked for, each filled or empty; an empty
    sequence item asks for all of the sequence's attributes."""
    out = Dataset()
    for element in requested:
        keyword = element.keyword
        if not keyword or keyword == "SpecificCharacterSet":
            continue
        if element.VR == "SQ":
            ours = full.get(keyword)
            if ours and element.value and len(element.value[0]):
                setattr(out, keyword, Sequence([restrict(ours[0], element.value[0], top=False)]))
            else:
                setattr(out, keyword, ours if ours is not None else Sequence())
        elif keyword in full:
            out[element.tag] = full[element.tag]  # the element itself: made and checked once
        else:
            out.add_new(element.tag, element.VR, None)
    if top:
        out.SpecificCharacterSet = full.SpecificCharacterSet
    return out
