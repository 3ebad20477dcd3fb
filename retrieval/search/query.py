"""The text of a query in its two forms, one rule each.

* `clean_text`: what the user typed, tidied (surrounding whitespace stripped, inner runs of
  whitespace collapsed to one space). It is what a search stores and shows.
* `normalise_query`: the same, case folded. It is what the caches are keyed by and what the text
  encoder and the generator get, so "Golden  Retriever" and "golden retriever" are one query
  (CLIP's tokenizer lower-cases anyway) and a cached proxy set is exactly what the query would
  generate now.
"""
from __future__ import annotations

MAX_QUERY_LENGTH = 300


def clean_text(text: str | None) -> str:
    return " ".join((text or "").split())


def normalise_query(text: str | None) -> str:
    """"  Golden\\tRetriever " -> "golden retriever"."""
    return clean_text(text).casefold()
