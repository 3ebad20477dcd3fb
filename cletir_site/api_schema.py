"""The OpenAPI schema documents the error answers every operation can give, not only success.

DRF answers 400 with the validation errors (an object of field -> messages), 401/403 when the
caller is not authenticated or not allowed, 404 for what does not exist *for this user* (other
users' libraries and searches included), and 429 when a quota is used up (uploads, searches that
generate proxies). Clients and schema-driven tests need those bodies described.
"""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

_DETAIL = inline_serializer("ErrorDetail", {"detail": serializers.CharField()})

ERROR_RESPONSES = {
    "400": OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input: each field with its messages"),
    "401": OpenApiResponse(_DETAIL, description="Not authenticated"),
    "403": OpenApiResponse(_DETAIL, description="Not allowed (e.g. a viewer uploading)"),
    "404": OpenApiResponse(_DETAIL, description="Not found, or not visible to this user"),
}
QUOTA_RESPONSE = OpenApiResponse(_DETAIL, description="Quota used up; see the Retry-After header")


class CletirAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction=direction)
        if direction != "response":
            return bodies
        errors = dict(ERROR_RESPONSES)
        if self.method == "POST":
            errors["429"] = QUOTA_RESPONSE
        for code, response in errors.items():
            bodies.setdefault(code, self._get_response_for_code(response, code, direction=direction))
        return bodies
