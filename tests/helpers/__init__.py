"""Helpers shared by the tests, importable as `tests.helpers` (pyproject: pytest `pythonpath = ["."]`).

One place for each: `REPO` (the checkout's root); `models.make_tiny_model` (a random tiny LLaMA
saved as a HF folder); `tokenizer.tiny_bpe` (a byte-level BPE with LLaMA's special ids); `train`
(the train tests' token store, tiny pretrain params, the torchrun runner); `dvc` (a git + DVC copy
of the checkout and a runner); `load_script` (a file of scripts/ as a module); `PROFILES` and
`load_named_profile` (the checked-in profiles, composed as `biomed-llama compose` would).
Synthetic stage outputs (a token store, an extract output) come from `biomed_llama.testing`, which
writes them through the package's own writers and is shared with bench/.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
"""The checkout's root folder (where params.yaml, dvc.yaml and data/sample live)."""


# The checked-in profiles by name: the demo, and the paper profile with each overlay that makes a profile.
PROFILES: dict[str, tuple[str, ...]] = {
    "params.yaml": ("params.yaml",),
    "paper": ("configs/paper.yaml",),
    "paper-intent": ("configs/paper.yaml", "configs/overlays/intent.yaml"),
}
"""Each profile's layers, relative to REPO, in merge order (`biomed-llama compose` composes them)."""


def load_named_profile(name: str):
    """The validated Params of the named profile (see PROFILES), composed from its layers."""
    from biomed_llama.config import load_params
    from biomed_llama.profiles import load_profile

    layers = PROFILES[name]
    if len(layers) == 1:
        return load_params(REPO / layers[0])
    return load_profile([REPO / layer for layer in layers])


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` imported as a module (the scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
