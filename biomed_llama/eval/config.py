"""Params of benchmark preparation and evaluation."""

from __future__ import annotations

from biomed_llama.schema import StrictModel


class EvalConfig(StrictModel):
    """Benchmark files, models to evaluate, suites and shot settings."""
