"""Helpers shared by the tests, importable as `tests.helpers` (pyproject: pytest `pythonpath = ["."]`).

One place for each: `REPO` (the checkout's root); `models.make_tiny_model` (a random tiny LLaMA
saved as a HF folder); `data.write_extracted` (an extract-stage output: Parquet parts + manifest);
`tokenizer.tiny_bpe` (a byte-level BPE with LLaMA's special ids); `train` (the token-store writer,
tiny pretrain params, the torchrun runner); `dvc` (a git + DVC copy of the checkout and a runner);
`load_script` (a file of scripts/ as a module).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
"""The checkout's root folder (where params.yaml, dvc.yaml and data/sample live)."""


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` imported as a module (the scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
