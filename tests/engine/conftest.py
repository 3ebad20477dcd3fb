"""Engine tests run on CPU with no database and no network.

The tiny-model fixtures (`tiny_model_dir`, `tiny_encoders`, `tiny_generator`) live in
tests/conftest.py, shared with the Django-side tests; none of them touches the database.
"""
