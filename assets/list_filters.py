"""Query parameters of the API's lists, declared and validated one way (django-filter).

Every list endpoint (a library's photos, a search's results, an album's photos) declares its
parameters as a FilterSet and reads them through `filter_list`: a value that is not allowed
answers 400 with `{"<parameter>": ["..."]}` on every endpoint alike, never a silent fallback,
and the OpenAPI schema lists the parameters from the same declaration (drf-spectacular reads
FilterSets given to an action as `filterset_class` with `filter_backends=LIST_FILTERS`).
"""
from __future__ import annotations

from django import forms
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

LIST_FILTERS = [filters.DjangoFilterBackend]


class FlagField(forms.Field):
    """A boolean parameter: true/false, 1/0, yes/no, on/off (any case); anything else is refused
    (django-filter's own BooleanFilter ignores what it cannot read)."""

    TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in self.TRUE | self.FALSE:
            return text in self.TRUE
        raise forms.ValidationError("true or false (1 or 0).")


class FlagFilter(filters.BooleanFilter):
    field_class = FlagField

    def __init__(self, *args, **kwargs):
        # The plain widget hands the raw text to FlagField (django-filter's BooleanWidget turns
        # what it cannot read into "not given").
        kwargs["widget"] = forms.TextInput
        super().__init__(*args, **kwargs)


class SortFilter(filters.ChoiceFilter):
    """`sort`: one of the named orders (name -> order_by arguments); the list's default order
    stands when it is not given."""

    def __init__(self, orders: dict[str, tuple], then: tuple = (), **kwargs):
        self.orders, self.then = orders, then
        kwargs.setdefault("error_messages", {"invalid_choice": f"One of: {', '.join(orders)}."})
        super().__init__(choices=[(name, name) for name in orders], method=self.order, **kwargs)

    def order(self, queryset, name, value):
        return queryset.order_by(*self.orders[value], *self.then) if value else queryset


def filter_list(filterset_class, request, queryset, **context):
    """`queryset` narrowed and ordered by the request's query parameters, or a 400 naming each
    parameter that is wrong."""
    filterset = filterset_class(request.query_params, queryset=queryset, request=request, **context)
    if not filterset.is_valid():
        raise ValidationError({name: [str(m) for m in messages] for name, messages in filterset.errors.items()})
    return filterset.qs


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.NumberFilter):
    """An id: a whole number that fits the bigint column (a larger one is no row's id, not a 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)
