from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import render

from assets.permissions import libraries_visible_to


@login_required
def home(request):
    libraries = (
        libraries_visible_to(request.user)
        .select_related("owner")
        .annotate(photo_count=Count("assets", distinct=True))
        .order_by("name", "id")
    )
    return render(request, "home.html", {"libraries": libraries})
