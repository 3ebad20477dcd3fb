"""`{{ album.filters|filters_summary }}`: stored search filters in words (retrieval.search.filters)."""
from django import template

from ..search.filters import PhotoFilters

register = template.Library()


@register.filter
def filters_summary(stored: dict) -> str:
    return PhotoFilters.from_json(stored).summary()
