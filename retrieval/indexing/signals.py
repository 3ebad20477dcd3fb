"""What indexing announces to the parts of `retrieval` built on it (it imports none of them).

`photos_indexed` is sent once per batch of photos that got vectors in a space, after the
transaction that stored the vectors has committed (a receiver that queues work can rely on the
vectors being readable):

    photos_indexed.send_robust(sender=EmbeddingSpace, space_id=<int>, asset_ids=<list[int]>)

Smart albums listen, to take the new photos that score above their cutoff.

`space_serving` is sent when search switches to a space (its re-index complete), after that
commits:

    space_serving.send_robust(sender=EmbeddingSpace, space_id=<int>)

Smart albums listen, to be made again in that space (retrieval.albums.derive).
"""
from django.dispatch import Signal

photos_indexed = Signal()
space_serving = Signal()
