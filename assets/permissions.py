"""The one authorization helper: which libraries a user may see or change.

Pages, API, admin and (later) media serving all ask here, so a rule lives in one place.
"""
from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import Library, LibraryMembership


def libraries_visible_to(user) -> QuerySet[Library]:
    """Libraries the user owns or is a member of (any role). Superusers see all."""
    if not getattr(user, "is_authenticated", False):
        return Library.objects.none()
    if user.is_superuser:
        return Library.objects.all()
    return Library.objects.filter(Q(owner=user) | Q(memberships__user=user)).distinct()


def libraries_editable_by(user) -> QuerySet[Library]:
    """Libraries the user owns or edits (may add and remove photos)."""
    if not getattr(user, "is_authenticated", False):
        return Library.objects.none()
    if user.is_superuser:
        return Library.objects.all()
    return Library.objects.filter(
        Q(owner=user) | Q(memberships__user=user, memberships__role=LibraryMembership.Role.EDITOR)
    ).distinct()
