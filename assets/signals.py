"""What `assets` announces to the apps that build on it (it imports none of them).

`asset_stored` is sent once per newly stored photo, after the transaction that stored it has
committed (so a receiver that queues work can rely on the row being visible to a worker):

    asset_stored.send_robust(sender=Asset, asset_id=<int>)

`retrieval` listens to queue the photo's embedding.
"""
from django.dispatch import Signal

asset_stored = Signal()
