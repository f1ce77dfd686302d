"""Evaluation: benchmark preparation, lm-eval task suites, the harness wrapper and the report."""
