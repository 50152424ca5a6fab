"""Example inference inputs (a synthetic-world portrait and speech); `make_examples` regenerates them."""
