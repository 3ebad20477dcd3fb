"""Which libraries a search or an album covers: one rule, read at the moment it matters.

The chosen libraries that the user may see *now* (`assets.permissions`), or every library they
may see when none were chosen. Ranking, stored results, match counts and albums all ask here, so
a user removed from a library stops seeing its photos everywhere at once, whatever was true when
a search ran or an album was saved.
"""
from __future__ import annotations

from collections.abc import Iterable

from assets.permissions import libraries_visible_to


def visible_library_ids(user, chosen_ids: Iterable[int] = ()) -> list[int]:
    visible = set(libraries_visible_to(user).values_list("pk", flat=True))
    chosen = set(chosen_ids)
    return sorted(visible & chosen if chosen else visible)


def search_library_ids(search, visible: Iterable[int] | None = None) -> list[int]:
    """The libraries `search` ranks: its chosen ones its user may see now (`visible`, when the
    caller has read them already)."""
    chosen = set(search.libraries.values_list("pk", flat=True))
    visible = set(visible_library_ids(search.user) if visible is None else visible)
    return sorted(visible & chosen if chosen else visible)
