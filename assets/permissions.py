"""The one authorization helper: which libraries a user may see or change.

Pages, API, admin and media serving all ask here, so a rule lives in one place. A library the
user may not see does not exist for them (404, never 403, so nothing leaks, not even that it
exists); one they see but may not change answers 403.
"""
from __future__ import annotations

from enum import IntEnum

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404

from .models import Library, LibraryMembership


class Access(IntEnum):
    VIEW = 1  # see photos, search
    EDIT = 2  # add and remove photos
    OWN = 3  # rename, delete, manage members


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


def access_to(user, library: Library) -> Access | None:
    """The user's level of access to a library, or None."""
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser or library.owner_id == user.pk:
        return Access.OWN
    role = library.memberships.filter(user=user).values_list("role", flat=True).first()
    if role == LibraryMembership.Role.EDITOR:
        return Access.EDIT
    if role == LibraryMembership.Role.VIEWER:
        return Access.VIEW
    return None


def library_for(user, pk, need: Access = Access.VIEW) -> tuple[Library, Access]:
    """The library `pk` when the user has at least `need`; 404 when they can't see it, 403
    when they see it but may not do this."""
    library = Library.objects.select_related("owner").filter(pk=pk).first()
    access = access_to(user, library) if library else None
    if access is None:
        raise Http404("No such library.")
    if access < need:
        raise PermissionDenied(f"You need {need.name.lower()} access to this library.")
    return library, access
