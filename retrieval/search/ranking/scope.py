"""Which photos a ranking covers: any set of photos the database selects.

A scope is the photos of some libraries that are not failed and, optionally, only those a
queryset of assets selects (search filters, issue 16: dates, camera, keywords, file type, ...
expressed as `Asset.objects.filter(...)`). Every backend reads it the same way:

* pgvector embeds it as a SQL condition on the asset row (`where`): the queryset becomes an
  `a.id IN (subquery)`;
* the memory backend builds a mask from the libraries it holds per row and, when there is a
  queryset, from the ids the database returns for it (`photo_ids`);
* results are checked against the same condition in the database before they are stored
  (`retrieval.search.results`), so a copy that missed a change costs a re-rank, never a leak.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from django.db.models import QuerySet

from assets.models import Asset

# Django writes a query's parameters as %s; a literal % is %%.
_POSITIONAL = re.compile(r"(?<!%)%s")


@dataclass(frozen=True, eq=False)
class Scope:
    library_ids: tuple[int, ...]
    photos: QuerySet[Asset] | None = None

    @classmethod
    def of(cls, scope: Scope | Iterable[int]) -> Scope:
        """A scope, or the scope of these libraries."""
        return scope if isinstance(scope, Scope) else cls(tuple(sorted({int(pk) for pk in scope})))

    @property
    def is_empty(self) -> bool:
        return not self.library_ids

    def where(self, alias: str = "a") -> tuple[str, dict]:
        """(SQL condition on the asset row `alias`, its named parameters)."""
        sql = f"{alias}.library_id = ANY(%(scope_libraries)s) AND {alias}.status <> %(scope_failed)s"
        params = {"scope_libraries": list(self.library_ids), "scope_failed": Asset.Status.FAILED}
        if self.photos is not None:
            subquery, subparams = self.photos.order_by().values("pk").query.sql_with_params()
            names = iter(f"scope_photos_{i}" for i in range(len(subparams)))
            sql += f" AND {alias}.id IN ({_POSITIONAL.sub(lambda _: f'%({next(names)})s', subquery)})"
            params.update({f"scope_photos_{i}": value for i, value in enumerate(subparams)})
        return sql, params

    def photo_ids(self) -> np.ndarray | None:
        """The ids the photos queryset selects (sorted), or None when the scope has none."""
        if self.photos is None:
            return None
        return np.unique(np.fromiter(self.photos.order_by().values_list("pk", flat=True), dtype=np.int64))

    def cache_key(self) -> tuple | None:
        """A key for what this scope selects from a copy that has not changed, or None when it
        depends on the database (a photos queryset is read again for every ranking)."""
        return None if self.photos is not None else self.library_ids
