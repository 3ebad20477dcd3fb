from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "retrieval"
    verbose_name = "Search and indexes"

    def ready(self) -> None:
        # Signal wiring needs the app registry ready (the receivers import models), hence here.
        from assets.signals import asset_stored

        from .albums.receivers import rederive_in_serving_space, score_newly_indexed_photos
        from .indexing.receivers import queue_indexing_of_stored_photo
        from .indexing.signals import photos_indexed, space_serving

        asset_stored.connect(queue_indexing_of_stored_photo, dispatch_uid="retrieval.index_on_store")
        photos_indexed.connect(score_newly_indexed_photos, dispatch_uid="retrieval.albums_on_indexed")
        space_serving.connect(rederive_in_serving_space, dispatch_uid="retrieval.albums_on_serving")
