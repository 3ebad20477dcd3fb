"""Celery tasks of cletir. Modules map to queues through their names (see cletir_site.celery):
`retrieval.tasks.search.*` → `search`, `retrieval.tasks.embed.*` → `embed`, the rest → `default`.
"""
from . import embed, maintenance, search  # noqa: F401  (registers the tasks with the app)
