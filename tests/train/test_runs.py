"""Run ids: the optimiser's move into `pretrain.optim` / `finetune.<mode>.optim` left every run id as it was,
so the checkpoints of runs from before it still resume."""

from __future__ import annotations

import pytest

import helpers as H

# Run ids computed by the version whose optimiser fields lay flat in `pretrain` and `finetune.<mode>`.
# That version's configs/paper.yaml held what configs/paper-intent.yaml holds now (lr 3e-5, no released
# loader); the released-scripts profile's values are other values, so other run ids.
EARLIER = {"params.yaml": ("283000e16932b29b", "868b6dc6ce676f0d"),
           "configs/paper-intent.yaml": ("2c9916792543a8cb", "dd4860d5f6c2dacb")}


@pytest.mark.parametrize("profile", sorted(EARLIER))
def test_run_ids_of_earlier_versions_are_kept(profile):
    from biomed_llama.config import load_params
    from biomed_llama.train.runs import spec_fingerprint

    p = load_params(H.REPO / profile)
    pretrain_id = spec_fingerprint(p.seed, p.model, p.pretrain, 100, {"tokens_files": "x"})
    task = p.finetune.engine_config(p.pretrain, "task", "medqa", 1000)
    finetune_id = spec_fingerprint(p.seed, p.model, task, 24, {"examples": "y"})
    assert (pretrain_id, finetune_id) == EARLIER[profile]


def test_every_optimiser_field_changes_the_run_id():
    from biomed_llama.config import load_params
    from biomed_llama.train.runs import spec_fingerprint

    p = load_params(H.REPO / "params.yaml")
    base = spec_fingerprint(p.seed, p.model, p.pretrain, 100, {})
    changed = {"lr": 1e-4, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.0, "warmup_ratio": 0.1,
               "num_cycles": 0.5, "max_grad_norm": 0.5}
    assert set(changed) == set(type(p.pretrain.optim).model_fields)
    for key, value in changed.items():
        cfg = p.pretrain.model_copy(update={"optim": p.pretrain.optim.model_copy(update={key: value})})
        assert spec_fingerprint(p.seed, p.model, cfg, 100, {}) != base, key
