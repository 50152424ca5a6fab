"""Synthetic talking-head TFDS builder (procedurally generated, no download)."""
