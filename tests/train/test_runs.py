"""Run ids: the optimiser's move into `pretrain.optim` / `finetune.<mode>.optim` left every run id as it was,
so the checkpoints of runs from before it still resume."""

from __future__ import annotations

import pytest

from tests.helpers import train as H

# Run ids computed by the version whose optimiser fields lay flat in `pretrain` and `finetune.<mode>`.
# That version's configs/paper.yaml held what the intent profile (paper.yaml + overlays/intent.yaml) holds
# now (lr 3e-5, no released loader); the released-scripts profile's values are other values, so other run ids.
EARLIER = {"params.yaml": ("283000e16932b29b", "868b6dc6ce676f0d"),
           "paper-intent": ("2c9916792543a8cb", "dd4860d5f6c2dacb")}


def _without_later_numerics(p):
    """The params with the numeric options added since (loss weighting, decay of norms, document order, the
    Trainer's step count, [PAD]) at their defaults, i.e. what the earlier versions computed."""
    def plain(optim):
        return optim.model_copy(update={"decay_norms_and_biases": False})

    pre = p.pretrain.model_copy(update={"loss_weighting": "token", "optim": plain(p.pretrain.optim),
                                        "document_order": "subset_major"})
    ft = p.finetune.model_copy(update={
        **{mode: getattr(p.finetune, mode).model_copy(update={"optim": plain(getattr(p.finetune, mode).optim),
                                                              "loss_weighting": None, "trainer_steps": None})
           for mode in ("instruct", "task")}, "pad_token": "none"})
    return p.model_copy(update={"pretrain": pre, "finetune": ft})


@pytest.mark.parametrize("profile", sorted(EARLIER))
def test_run_ids_of_earlier_versions_are_kept(profile):
    from biomed_llama.train.runs import spec_fingerprint
    from tests.helpers import load_named_profile

    p = _without_later_numerics(load_named_profile(profile))
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
               "num_cycles": 0.5, "max_grad_norm": 0.5, "decay_norms_and_biases": True}
    assert set(changed) == set(type(p.pretrain.optim).model_fields)
    for key, value in changed.items():
        cfg = p.pretrain.model_copy(update={"optim": p.pretrain.optim.model_copy(update={key: value})})
        assert spec_fingerprint(p.seed, p.model, cfg, 100, {}) != base, key


def test_later_numeric_options_change_the_run_id_only_when_set():
    from biomed_llama.config import load_params
    from biomed_llama.train.runs import spec_fingerprint

    p = load_params(H.REPO / "params.yaml")
    base = spec_fingerprint(p.seed, p.model, p.pretrain, 100, {})
    seq = p.pretrain.model_copy(update={"loss_weighting": "sequence"})
    assert spec_fingerprint(p.seed, p.model, seq, 100, {}) != base
    for later in ({"document_order": "interleaved"}, {"document_order": "shuffled"}, {"added_tokens": 1}):
        assert spec_fingerprint(p.seed, p.model, p.pretrain.model_copy(update=later), 100, {}) != base, later
    # FP8 training changes the numbers: each recipe is a run of its own; off (null) keeps the earlier ids
    fp8 = {r: spec_fingerprint(p.seed, p.model, p.pretrain.model_copy(update={"float8": r}), 100, {})
           for r in (None, "tensorwise", "rowwise")}
    assert fp8[None] == base and len(set(fp8.values())) == 3
    speed = p.pretrain.model_copy(update={"sdpa_backend": "cudnn", "kernels": ["rms_norm"], "grad_sync": "every",
                                          "checkpoint_async": True, "compile": True,
                                          "activation_memory_budget": 0.7, "gathered_layers": 2,
                                          "deterministic": True})
    assert spec_fingerprint(p.seed, p.model, speed, 100, {}) == base
