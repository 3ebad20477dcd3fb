"""Rows for `COPY ... FROM STDIN WITH (FORMAT binary)`, built as one numpy structured array.

Postgres' binary COPY row is a field count, then a (length, value) pair per column, all in
network byte order; a file is a header, the rows and a trailer. Built with numpy, 1000 rows are
one `tobytes()` instead of 1000 Python calls, and no number is formatted as text.
"""
from __future__ import annotations

import struct

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no extension
TRAILER = struct.pack(">h", -1)


def row_type(columns: list[tuple[str, object]]) -> np.dtype:
    """The binary row of `columns`, (name, big-endian numpy dtype) in COPY's column order. A
    column whose type has a binary format of several parts (pgvector's halfvec: int16 dim,
    int16 unused, float16 values) is given as a structured dtype of those parts."""
    fields: list[tuple] = [("fields", ">i2")]
    for name, value in columns:
        fields += [(f"{name}_len", ">i4"), (name, value)]
    return np.dtype(fields)


def new_rows(row: np.dtype, count: int) -> np.ndarray:
    """`count` zeroed rows of `row` with the field count and every length set (from the
    columns' sizes); the caller fills in the values."""
    rows = np.zeros(count, dtype=row)
    columns = row.names[2::2]  # after "fields": (length, value) pairs
    rows["fields"] = len(columns)
    for name in columns:
        rows[f"{name}_len"] = row.fields[name][0].itemsize
    return rows
