"""The params models' defaults are the demo's params.yaml, except the keys listed here with the reason.

A params file that leaves a key out gets the default; where that default is not the demo's value, it is
the original's (its docstring cites it) or the smallest valid setting, and it is named below. A new
difference fails until it is made equal or listed.
"""

from __future__ import annotations

from typing import Any

from biomed_llama.config import Params, load_params
from tests.helpers import REPO

# The default documents the original's setting (the paper, its scripts or HF Trainer's, cited on the field);
# the demo scales it down to run on 2 CPU cores in minutes.
ORIGINAL_VALUE = {
    "extract.rows_per_shard", "tokenize.batch_size",
    "pretrain.global_batch_size", "pretrain.micro_batch_size", "pretrain.optim.lr", "pretrain.log_every",
    "pretrain.checkpoint_every", "pretrain.keep_checkpoints",
    "finetune.checkpoint_every", "finetune.task.epochs",
    "finetune.instruct.global_batch_size", "finetune.instruct.micro_batch_size", "finetune.instruct.optim.lr",
    "finetune.task.global_batch_size", "finetune.task.micro_batch_size", "finetune.task.optim.lr",
    "eval.dtype", "eval.device", "eval.batch_size", "eval.token_budget", "eval.generation.max_new_tokens",
}
# Speed only: one worker by default, two on the demo's two cores (outputs are the same for any count).
WORKERS = {"extract.workers", "tokenize.workers", "contamination.workers"}
# The demo's rows of the table and their inputs: a default names no model but the pretrained one, no few-shot
# pool beyond the test sets, no second fine-tune start and no init export, so a params file says what it adds.
DEMO_ROWS = {
    "eval.models", "eval.benchmarks.medqa4_train", "eval.benchmarks.medqa5_train", "eval.benchmarks.medmcqa_train",
    "finetune.tasks", "finetune.base", "pretrain.export_init",
}
LISTED = ORIGINAL_VALUE | WORKERS | DEMO_ROWS


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key → value of every leaf, a section given as None kept as one key."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v and f"{prefix}{k}" not in ("eval.models", "finetune.tasks", "finetune.base"):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_defaults_equal_the_demo_except_the_listed_keys():
    default = _flat(Params().model_dump(mode="json"))
    demo = _flat(load_params(REPO / "params.yaml").model_dump(mode="json"))
    assert default.keys() == demo.keys()
    differ = {k for k in default if default[k] != demo[k]}
    assert differ - LISTED == set(), "make the default equal the demo's value, or list the key with its reason"
    assert LISTED - differ == set(), "a listed key now equals the demo's: drop it from the list"
