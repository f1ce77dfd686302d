"""Helpers shared by the tests, importable as `tests.helpers` (pyproject: pytest `pythonpath = ["."]`).

One place for each: `REPO` (the checkout's root); `models.make_tiny_model` (a random tiny LLaMA
saved as a HF folder); `data.write_extracted` (an extract-stage output: Parquet parts + manifest);
`tokenizer.tiny_bpe` (a byte-level BPE with LLaMA's special ids); `train` (the token-store writer,
tiny pretrain params, the torchrun runner); `dvc` (a git + DVC copy of the checkout and a runner).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The checkout's root folder (where params.yaml, dvc.yaml and data/sample live)."""
