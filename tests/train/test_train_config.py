"""The training params: one optimiser section with per-stage defaults, and a fine-tune run's engine config
built by validation (a wrong key or value fails there, in one line)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.helpers import train as H


def test_engine_config_maps_each_mode_onto_the_engine():
    from biomed_llama.config import load_params
    from biomed_llama.train.config import PretrainConfig

    paper = load_params(H.REPO / "configs" / "paper.yaml")
    ft = paper.finetune
    task = ft.engine_config(paper.pretrain, "task", "medqa", 10178)
    assert isinstance(task, PretrainConfig) and task.optim.model_dump() == ft.task.optim.model_dump()
    opt = task.optim
    assert (opt.lr, opt.weight_decay, opt.warmup_ratio, opt.num_cycles) == (2e-5, 1e-4, 0.03, 0.5)
    assert opt.betas == (0.9, 0.999)
    assert task.global_batch_size == 128 and task.max_seq_length == 2048
    assert task.max_steps == 3 * (-(-10178 // 8) // 16) == 237  # 3 epochs, counted as the released Trainer did
    assert task.added_tokens == 1 and task.document_order == "subset_major"  # [PAD] as released; no subsets in SFT
    assert task.output == "models/ft-medqa" and task.checkpoint_dir == "checkpoints/finetune/task-medqa"
    assert task.export_init is None and task.tokenizer == ft.model
    # what fine-tuning does not set comes from the pretrain section
    assert (task.param_dtype, task.compile, task.activation_checkpointing) == ("bfloat16", True, "selective")
    inst = ft.engine_config(paper.pretrain, "instruct", None, 150_000)
    assert inst.max_steps == 1171 and inst.output == "models/instruct"  # one pass over the draw
    assert paper.pretrain.optim.lr == 1e-5  # the pretrain section itself is left as it was (the released script's)
    assert task.released_loader is None and paper.pretrain.released_loader is not None  # SFT: a map-style dataset
    with pytest.raises(ValueError, match="unknown fine-tune task"):
        ft.engine_config(paper.pretrain, "task", "nope", 10)


def test_engine_config_is_validated_as_a_whole():
    """A value that slipped past its own section (here: set without validation) fails when the engine config
    is built, instead of being stored silently as `model_copy(update=…)` would."""
    from biomed_llama.train.config import FinetuneConfig, FinetuneHparams, PretrainConfig

    good = FinetuneConfig()
    bad = FinetuneHparams.model_construct(**{**dict(good.task), "micro_batch_size": 3})
    ft = FinetuneConfig.model_construct(**{**dict(good), "task": bad})
    with pytest.raises(ValidationError, match="micro_batch_size .3. must divide"):
        ft.engine_config(PretrainConfig(), "task", "medqa", 100)


def test_finetune_sections_have_their_own_optimiser_defaults():
    from biomed_llama.train.config import FinetuneConfig, FinetuneHparams, OptimConfig, PretrainConfig

    pre = PretrainConfig(optim={"lr": 1e-3}).optim
    ft = FinetuneHparams(optim={"lr": 1e-3}).optim  # the keys not given take fine-tuning's defaults
    assert isinstance(ft, OptimConfig) and pre.lr == ft.lr == 1e-3
    assert (pre.betas, pre.weight_decay, pre.num_cycles) == ((0.9, 0.95), 0.1, 0.39758361765043326)
    assert (ft.betas, ft.weight_decay, ft.num_cycles) == ((0.9, 0.999), 1e-4, 0.5)
    defaults = FinetuneConfig()  # the demo's (tests/test_defaults.py): lr 1e-3, one epoch each
    assert defaults.instruct.optim == defaults.task.optim and defaults.task.optim.lr == 1e-3
    assert (defaults.instruct.epochs, defaults.task.epochs) == (1, 1)


def test_a_bad_effective_config_is_a_one_line_config_error(monkeypatch, tmp_path):
    """Through the stage: the fine-tune spec turns the validation error into a ConfigError naming the key."""
    from biomed_llama.errors import ConfigError
    from biomed_llama.train import config as train_config
    from biomed_llama.train.finetune import FinetuneParams, finetune_spec

    start = tmp_path / "start"
    start.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        (start / name).write_text("{}")
    raw = H.tiny_params(tmp_path, tmp_path / "tokens")
    raw["finetune"] = {"model": str(start), "model_external": True}  # made here, without a manifest
    params = FinetuneParams.of(H.validate(raw))
    monkeypatch.setattr("biomed_llama.instruct.finetune_data.build_sft_dataset", lambda *a: list(range(8)))
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(train_config.FinetuneHparams, "steps", lambda self, n: 0)  # max_steps must be >= 1
    with pytest.raises(ConfigError) as e:
        finetune_spec(params, "task", "medqa")
    assert "effective engine params: max_steps: Input should be greater than or equal to 1" in str(e.value)
    assert "\n" not in str(e.value)
