"""What a user can learn from the shared caches: nothing about other users' searches.

Generated proxies depend only on the text, the seeds and the models, so one set serves every
user who searches the same category, and the GPU makes it once. But a cache hit shows (a flag,
a stage time, the latency) and would tell a user that somebody else had searched for it. So a
user meets the caches only through their own searches:

* proxy sets: a search reports `proxies_cached` only when the same user's earlier search used
  the set. A first use of a set that someone else's search made reports what making it cost
  (the generation and embedding seconds recorded with the set) and takes as long: the worker
  waits out that time where generation would have run, so the search looks, to its user and
  to a stopwatch, as if it had generated;
* the text vectors a worker keeps are keyed by user (`inputs.text_vectors`);
* the hourly generation quota counts a search as generating unless the user's own earlier
  search made or used the set (`limits.will_generate`);
* no page or API answer names a set (proxy images are read through the user's own search).

What it costs: a user's first search of a category takes as long as generating it, whoever
searched it before; the GPU still generates each set once.
"""
from __future__ import annotations

import time

from django.db.models import Q

from ..models import ProxySet, Search


def used_before(user, proxy_set: ProxySet, search: Search) -> bool:
    """Whether `user` had another search (any, refinements included) with this set."""
    return (Search.objects.filter(user=user).exclude(pk=search.pk)
            .filter(Q(proxy_set=proxy_set) | Q(negative_proxy_set=proxy_set)).exists())


def cost_of_making(proxy_set: ProxySet) -> dict[str, float]:
    """The stage timings the set's making recorded."""
    return {"generation": float(proxy_set.generation_seconds), "proxy_embedding": float(proxy_set.embedding_seconds)}


def wait_as_if_made(proxy_set: ProxySet, already: float = 0.0) -> None:
    """Take as long as making the set took (less `already` seconds spent looking it up)."""
    remaining = sum(cost_of_making(proxy_set).values()) - already
    if remaining > 0:
        time.sleep(remaining)
