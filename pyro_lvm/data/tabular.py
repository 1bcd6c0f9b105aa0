"""Numeric tables from CSV files with a header row."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: a decimal number as CSV files write it: sign, digits with an optional point, optional exponent
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def read_csv_table(path, columns: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, List[str]]:
    """Read a CSV file with a header row into a float64 array.

    :param path: the file.
    :param columns: the column names to keep (all when ``None``).
    :returns: ``(array of shape (rows, columns), column names)``.

    Raises :class:`ValueError` saying which row and column is at fault for
    non-numeric or missing values, unknown columns, an empty table or a
    constant column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is no header
            reader = csv.reader(f)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValueError(f"{path} is empty: expected a header row of column names") from None
            rows = [r for r in reader if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 CSV") from None
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in the header {header}")
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the header has {header}")
        keep = [header.index(c) for c in columns]
    else:
        keep = list(range(len(header)))
    names = [header[i] for i in keep]
    data = np.empty((len(rows), len(keep)))
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {r + 2}: {len(row)} fields, the header has {len(header)}")
        for j, i in enumerate(keep):
            cell = row[i].strip()
            if cell == "" or cell.lower() in ("na", "nan", "null", "none", "?"):
                raise ValueError(f"{path}, line {r + 2}, column {header[i]!r}: missing value")
            try:
                if not _NUMBER.fullmatch(cell):  # float() also takes '1_000', ' 1', 'infinity'
                    raise ValueError(cell)
                value = float(cell)
            except ValueError:
                raise ValueError(f"{path}, line {r + 2}, column {header[i]!r}: {cell!r} is not a "
                                 "number; pick numeric columns with --columns") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}, line {r + 2}, column {header[i]!r}: {cell!r} is not finite")
            data[r, j] = value
    if data.shape[0] == 0:
        raise ValueError(f"{path} has a header but no data rows")
    constant = [n for n, col in zip(names, data.T) if np.all(col == col[0])]
    if constant and data.shape[0] > 1:
        raise ValueError(f"{path}: column(s) {constant} are constant; drop them with --columns")
    return data, names
