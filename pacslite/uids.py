"""The UIDs pacslite makes: under the configured ``UID_ROOT``, or UUID-derived (2.25) without one."""
from __future__ import annotations

from pydicom.uid import generate_uid


def new_uid(root: str) -> str:
    return generate_uid(prefix=f"{root.rstrip('.')}." if root else None)
