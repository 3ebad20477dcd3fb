"""Query vectors sent to Postgres as binary parameters, on a server-side-binding cursor.

Django's psycopg cursors bind parameters on the client: an 896-dim query vector becomes a
~10 KB text literal that Python formats, psycopg quotes into the SQL text and Postgres parses
back, ~3-4 ms per query on a small CPU, as long as the HNSW search itself at top 100
(bench/search.py). In pgvector's binary wire format (int16 dim, int16 unused, then big-endian
float16 for `halfvec` or float32 for `vector`) the same vector is 1.8 KB that numpy writes in one
call and the server copies.

The parameter is sent with an unspecified type, so the statement must cast it
(`%(query)s::halfvec(896)` / `::vector`): Postgres then reads it with that type's binary input.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
from django.db import connection
from psycopg.adapt import Dumper
from psycopg.pq import Format


class VectorParam:
    """A query vector for one statement; `half` picks halfvec (float16) over vector (float32)."""

    def __init__(self, values: np.ndarray, half: bool) -> None:
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"a query vector must be one-dimensional, got shape {values.shape}")
        self.payload = struct.pack(">hh", values.shape[0], 0) + values.astype(">f2" if half else ">f4").tobytes()


class _VectorParamDumper(Dumper):
    format = Format.BINARY  # oid stays 0 (unspecified): the statement's cast names the type

    def dump(self, obj: VectorParam) -> bytes:
        return obj.payload


@contextmanager
def binary_cursor() -> Iterator[psycopg.Cursor]:
    """A server-side-binding cursor on Django's connection (same session and transaction), with
    database errors raised as Django's (callers retry on `django.db.OperationalError`).
    Execute with `binary=True`."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.adapters.register_dumper(VectorParam, _VectorParamDumper)
        yield cursor
