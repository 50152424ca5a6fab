"""MEAD TFDS builder (manual download)."""
