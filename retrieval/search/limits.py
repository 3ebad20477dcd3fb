"""Abuse limits on the expensive work: generating proxies costs GPU seconds, a cached query
costs a database lookup, so only searches that will generate count against a user's quota."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from retrieval.engine.seeds import proxy_seeds

from ..indexing.spaces import serving_space
from ..models import Search
from .proxies import seeds_key
from .query import normalise_query

WINDOW = timedelta(hours=1)


@dataclass
class RateLimited(Exception):
    message: str
    retry_after_seconds: int


def will_generate(user, text: str, seed: int, k: int) -> bool:
    """Whether a search for `text` counts as generating for `user`: none of the user's own
    searches used a proxy set of the serving space with this query and these seeds yet. Another
    user's set does not count (it would tell the user that someone searched the text; see
    `cache_privacy`); the generator's own key is left out: it changes only when the site
    changes its generator, and then every query generates anyway."""
    space = serving_space()
    if space is None or not text:
        return False
    key = seeds_key(proxy_seeds(seed, k))
    return not Search.objects.filter(user=user, proxy_set__query=normalise_query(text), proxy_set__space=space,
                                     proxy_set__seeds_key=key).exists()


def check_search_quota(user, text: str, seed: int, k: int, text_only: bool) -> None:
    """Raise RateLimited when the user has generated proxies for CLETIR_GENERATING_SEARCHES_PER_HOUR
    searches in the last hour and this one would generate again."""
    limit = settings.CLETIR_GENERATING_SEARCHES_PER_HOUR
    if limit <= 0 or text_only or not will_generate(user, text, seed, k):
        return
    since = timezone.now() - WINDOW
    recent = Search.objects.filter(user=user, created_at__gte=since, parent__isnull=True, text_only=False)
    # `contains`, not a key lookup: a search not run yet has no such key, and `key = true`
    # would be NULL there and drop it from the count.
    generating = recent.exclude(timings__contains={"proxies_cached": True}).exclude(status=Search.Status.FAILED)
    count = generating.count()
    if count >= limit:
        oldest = generating.order_by("created_at").values_list("created_at", flat=True).first()
        retry = max(1, int((oldest + WINDOW - timezone.now()).total_seconds())) if oldest else 60
        raise RateLimited(
            f"You have run {count} searches that generate new images in the last hour, the most this "
            f"site allows ({limit}). Searches for categories you searched before still work; new ones "
            f"again in about {max(1, retry // 60)} minutes.",
            retry,
        )
