"""CSV written for people to open in a spreadsheet, with formulas neutralised.

Cells of a run's CSV export hold text from crawled pages and from whoever wrote the run: a cell that starts with
``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which some spreadsheets skip before reading one of
those) is taken as a formula when the file is opened, and a formula can fetch URLs with the sheet's data or, in
older spreadsheets, run commands (CSV injection). Such a string cell gets a leading ``'``, which spreadsheets
show as text and do not evaluate. Numbers are written as they are: a number is never a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` with a ``'`` in front when it is a string a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(fh: TextIO, columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> None:
    """The header and rows as CSV on ``fh``, every cell (header included) through ``safe_cell``."""
    w = csv.writer(fh)
    w.writerow([safe_cell(c) for c in columns])
    w.writerows([safe_cell(v) for v in row] for row in rows)


def csv_text(columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``write_csv`` into a string."""
    buf = io.StringIO()
    write_csv(buf, columns, rows)
    return buf.getvalue()
