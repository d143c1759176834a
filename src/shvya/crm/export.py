"""CSV lines for exports (GET /suppressions.csv), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

SUPPRESSION_CSV_HEADER = ("address", "channel", "reason", "source", "created_at")
_E164 = re.compile(r"\+[0-9]{6,15}")
# A cell a spreadsheet would run as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    if value.startswith(_FORMULA_START) and not _E164.fullmatch(value):
        return "'" + value
    return value


def csv_line(values: Sequence[str]) -> str:
    """One CSV record (RFC 4180: quoted where needed, CRLF-terminated)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([_cell(v) for v in values])
    return buffer.getvalue()
