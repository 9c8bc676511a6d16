"""The UIDs pacslite makes: under the configured ``UID_ROOT``, or UUID-derived (2.25) without one."""
from __future__ import annotations

import re

from pydicom.uid import generate_uid

#: A UID as PS3.5 9.1 writes it: digits in dot-separated components (at most 64 characters).
UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and UID.fullmatch(value) is not None


def new_uid(root: str) -> str:
    return generate_uid(prefix=f"{root.rstrip('.')}." if root else None)
