"""The demo model's first pretraining losses against the committed `tests/reference/pretrain_losses.json`.

The demo's `model` and `pretrain` params from params.yaml, on a deterministic synthetic token
store, fp32 on CPU. A change to init, data order, packing, loss normalisation or the optimizer
shows up here. Regenerate (only for an intended change, and say why in the commit):
    python tests/train/test_reference_losses.py --write
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.helpers import train as H

REFERENCE = H.REPO / "tests" / "reference" / "pretrain_losses.json"
STEPS = 8
TOL = 1e-5


def demo_losses(tmp: Path) -> dict[int, float]:
    """Run the demo model/pretrain params for STEPS steps on the synthetic store; return losses by step."""
    import yaml

    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    raw = yaml.safe_load((H.REPO / "params.yaml").read_text())
    tokens = H.make_tokens(tmp / "tokens", n_docs=120, seed=1, min_len=20, max_len=200)
    raw["pretrain"].update(tokens=str(tokens), max_steps=STEPS, log_every=1, checkpoint_every=STEPS, progress=False,
                           device="cpu", tokenizer=str(H.TOKENIZER), checkpoint_dir=str(tmp / "ckpt"),
                           output=str(tmp / "model"), metrics=str(tmp / "metrics.json"), plots=str(tmp / "plots"),
                           export_init=str(tmp / "init"))  # the demo exports its init first: losses unchanged
    return run_pretrain(PretrainParams.of(H.validate(raw))).losses


def test_demo_losses_match_reference(tmp_path):
    ref = json.loads(REFERENCE.read_text())
    got = demo_losses(tmp_path)
    expected = {int(k): v for k, v in ref["losses"].items()}
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1))
    worst = max(abs(got[s] - expected[s]) for s in expected)
    assert worst < TOL, f"demo losses drifted by {worst:.2e} from {REFERENCE.name}: {got}"


if __name__ == "__main__" and "--write" in sys.argv:
    import torch
    import transformers

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        losses = demo_losses(Path(d))
    REFERENCE.write_text(json.dumps({
        "what": "demo model/pretrain params (params.yaml), synthetic token store of tests/train/helpers.make_tokens"
                "(n_docs=120, seed=1, lengths 20..200), fp32 CPU, 1 process",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "losses": {str(k): v for k, v in sorted(losses.items())}}, indent=2) + "\n")
    print(REFERENCE.read_text())
