"""Fuzzing cbn-inspect's loaders and analysis: seed corpus, mutators, an in-process harness (see README.md)."""
