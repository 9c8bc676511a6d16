"""CSV downloads. Every cell a spreadsheet would take for a formula is neutralised (OWASP):
DICOM strings and typed text are hostile input, and a station AE title ``=HYPERLINK(…)``
must open as text, not run."""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable

from flask import Response

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: Any) -> Any:
    """A text cell that starts like a formula gets a leading apostrophe; numbers stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def response(rows: Iterable[Iterable[Any]], filename: str) -> Response:
    """A CSV attachment (UTF-8 with a byte order mark, so that Excel reads Chinese right)."""
    out = io.StringIO()
    csv.writer(out).writerows([neutralise(cell) for cell in row] for row in rows)
    return Response("\ufeff" + out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})
