"""Weight fingerprints: a short hash of the weights a model actually loaded.

An embedding space and a proxy cache key record it, so vectors made by other weights never mix.
"""

from __future__ import annotations


def weights_fingerprint(named_tensors) -> str:
    """A short hash identifying a set of weights, cheap enough to compute at every load.

    Hashes each tensor's name, shape and an evenly spaced sample of up to 2048 of its values
    (in float32). Two different checkpoints virtually never agree on all samples, and hashing
    the loaded values (not files) makes it independent of file format and location.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda kv: kv[0]):
        flat = tensor.detach().reshape(-1)
        if flat.numel() > 2048:
            # Integer spacing: float linspace overshoots on tensors of ~1e8 elements.
            idx = torch.arange(2048, device=flat.device) * (flat.numel() - 1) // 2047
            flat = flat[idx]
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(flat.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
