"""Batches from splits: training (exact resume, rank slices) and evaluation (contiguous)."""
