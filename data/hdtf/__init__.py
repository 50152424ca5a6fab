"""HDTF TFDS builder (manual download)."""
