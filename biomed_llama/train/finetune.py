"""`biomed-llama finetune`: instruction tuning (`instruct`) or full fine-tuning on one benchmark (`task`).

The engine (`biomed_llama.train.engine.run_training`) runs it as it runs pretraining: same sharding,
checkpoints, resume, metrics and export. What differs is the `TrainSpec`:

- data: the SFT dataset of `biomed_llama.instruct.finetune_data` (BOS + prompt + output + EOS,
  right-padded to `finetune.max_length`, labels -100 on BOS, prompt and padding). The engine's loss
  normaliser counts only positions with a label, so the loss is the mean over output + EOS tokens;
- start: the HF weights of `finetune.model` (loaded shard by shard), its tokenizer copied into the export;
- params: `FinetuneConfig.engine_config`: `params.pretrain` with the mode's optimiser section, batch,
  steps, sequence length and output / checkpoint / metrics / plot paths in place, validated as a whole;
- fingerprint: the dataset's content hash and the start model's file hashes join the run
  fingerprint, so other examples or another start model train in a run folder of their own
  (`<finetune.checkpoints>/<instruct|task-NAME>/<run_id>/`) instead of resuming a stale checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from biomed_llama.errors import ConfigError, UserError
from biomed_llama.provenance import MANIFEST, require_trusted_model
from biomed_llama.train.engine import TrainResult, TrainSpec, run_training
from biomed_llama.train.runs import manifest_files_id

Mode = Literal["instruct", "task"]


def _start_model_id(folder: str) -> str | None:
    """The start model's content identity: sha256 over its manifest's file hashes (None without a manifest)."""
    return manifest_files_id(folder)


def _downloaded_model_id(folder: str) -> str:
    """sha256 over (name, sha256) of every file of a model without a manifest (`finetune.model_external`)."""
    import hashlib

    from biomed_llama.fsutil import sha256_file

    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(f"{p.relative_to(folder).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def finetune_spec(params, mode: Mode, task: str | None = None) -> TrainSpec:
    """The engine spec of a fine-tune run of `mode` (and `task` in task mode)."""
    from pydantic import ValidationError

    from biomed_llama.config import describe_error, section_dict
    from biomed_llama.model.config import ModelConfig

    ft = params.finetune
    if mode not in ("instruct", "task"):
        raise UserError(f"unknown finetune mode {mode!r}; use instruct or task")
    if mode == "task" and task is None:
        raise UserError(f"finetune --mode task needs --task (one of {', '.join(sorted(ft.tasks))})")
    if mode == "instruct" and task is not None:
        raise UserError("finetune --task is for --mode task only")
    try:
        name = ft.run_name(mode, task)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not (Path(ft.model) / "config.json").is_file() or not (Path(ft.model) / "tokenizer_config.json").is_file():
        raise UserError(f"finetune.model={ft.model}: not a HF model directory with its tokenizer "
                        "(run the pretrain stage first)")
    require_trusted_model(ft.model, external=ft.model_external, opt_in="finetune.model_external")
    has_manifest = (Path(ft.model) / MANIFEST).is_file()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ft.model)
    from biomed_llama.instruct.finetune_data import build_sft_dataset

    # Built here (every rank, the same deterministic tokenization) for the step count; the engine asks for it again.
    ds = build_sft_dataset(params, mode, task, tokenizer)
    try:
        cfg = ft.engine_config(params.pretrain, mode, task, len(ds))
        model = ModelConfig.model_validate({**params.model.model_dump(), "base": ft.model})
    except ValidationError as e:
        raise ConfigError(describe_error(e, f"finetune --mode {mode}: effective engine params")) from None
    data_input = ft.mixture if mode == "instruct" else ft.tasks[name].path
    stats = ds.stats()
    start_id = _start_model_id(ft.model)
    return TrainSpec(
        stage="finetune", seed=params.seed, cfg=cfg, model=model,
        dataset=lambda: (ds, int(ds.tokens.max()) + 1 if len(ds.tokens) else None),
        # a stage's output carries a manifest and is checked; an external model (the opt-in) has none: its files
        # are hashed into the fingerprint below and, as an input, into the export's manifest
        verify=([ft.model] if has_manifest else [])
        + ([ft.mixture] if mode == "instruct" else []),
        inputs=[ft.model, data_input],
        manifest_params={"seed": params.seed, "mode": mode, "task": task, "model": section_dict(model),
                         "finetune": section_dict(ft), "engine": cfg.model_dump(mode="json")},
        data_fingerprint={"mode": mode, "task": task, "examples": ds.fingerprint(),
                          "start_model": start_id or _downloaded_model_id(ft.model)},
        extra_metrics={"mode": mode, "task": task, **{f"data_{k}": v for k, v in stats.items()}},
        resume_hint="finetune.checkpoints",
    )


def run_finetune(params, mode: Mode, task: str | None = None) -> TrainResult | None:
    """Fine-tune `finetune.model` in `mode` through the engine; export, metrics and plots on rank 0."""
    return run_training(finetune_spec(params, mode, task))
