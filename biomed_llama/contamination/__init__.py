"""Benchmark contamination: which test items the pretraining corpus already holds (13-gram overlap, lm-eval's)."""
