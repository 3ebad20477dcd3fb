"""cletir retrieval engine: category-level text-to-image retrieval with diffusion proxies.

Pure Python + torch + numpy; nothing here imports Django. Submodules are imported on demand
(``from retrieval.engine.encoders import load_encoders``) so that ``import retrieval.engine``
stays cheap and never loads torch, open_clip, transformers or diffusers by itself.
"""
