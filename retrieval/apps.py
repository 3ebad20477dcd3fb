from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "retrieval"
    verbose_name = "Search and indexes"

    def ready(self) -> None:
        from assets.signals import asset_stored

        from .receivers import queue_indexing_of_stored_photo

        asset_stored.connect(queue_indexing_of_stored_photo, dispatch_uid="retrieval.index_on_store")
