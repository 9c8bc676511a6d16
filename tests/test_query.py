"""The query-matching engine (pacslite.core.query): wildcards agree with the standard's meaning and
never take exponential time."""
from __future__ import annotations

import itertools
import re
import threading

import pytest

from pacslite.core import query


def reference(pattern: str, value: str) -> bool:
    """What * and ? mean, as a regular expression (fine for the short cases compared here)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def test_wildcards_agree_with_their_definition_on_every_short_case() -> None:
    values = ["".join(p) for n in range(6) for p in itertools.product("ab", repeat=n)]
    patterns = ["".join(p) for n in range(5) for p in itertools.product("ab*?", repeat=n)]
    for pattern in patterns:
        for value in values:
            assert query.wildcard_match(pattern, value) == reference(pattern, value), (pattern, value)


@pytest.mark.parametrize("pattern, value, expected", [
    ("ZHANG^*", "ZHANG^SAN", True), ("*^SAN", "ZHANG^SAN", True), ("Z?ANG*", "ZHANG^SAN", True),
    ("*AN*AN*", "ZHANG^SAN", True), ("*AN*AN*AN*", "ZHANG^SAN", False), ("张*", "张^三", True),
])
def test_name_wildcards(pattern, value, expected) -> None:
    assert query.wildcard_match(pattern, value) is expected


def test_a_pathological_pattern_is_matched_in_bounded_time() -> None:
    """``*a*a*a…b`` against ``aaaa…``: exponential for a backtracking regex, quick here."""
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.extend(
        query.matches_text("*a" * 300 + "*b", "a" * 1000) for _ in range(20)))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and results == [False] * 20


def test_absurdly_long_query_values_are_refused() -> None:
    with pytest.raises(query.QueryError):
        query.matches_text("*" * (query.MAX_QUERY_LENGTH + 1), "x")
    with pytest.raises(query.QueryError):
        query.matches_name("A" * (query.MAX_QUERY_LENGTH + 1), "张三")
