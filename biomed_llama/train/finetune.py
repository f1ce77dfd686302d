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

Two starts: `pretrained` (`finetune.model`, the BioMed-LLaMA rows) and `base` (`finetune.base`, the
LLaMA-7B rows), fine-tuned alike into their own folders. A task with `seeds` is fine-tuned once per
seed, in one process (one process group for all), each model in `<prefix><task>/seed-<seed>/`; the
task's metrics file then holds every seed's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.errors import ConfigError, UserError
from biomed_llama.model.config import ModelConfig
from biomed_llama.provenance import require_trusted_model
from biomed_llama.train.config import FinetuneConfig, PretrainConfig, Start
from biomed_llama.train.engine import TrainResult, TrainSpec, run_training
from biomed_llama.train.runs import manifest_files_id

Mode = Literal["instruct", "task"]


@dataclass(frozen=True)
class FinetuneParams:
    """What a fine-tune reads: its section, the engine settings it inherits, the model's, how task files are
    read, the master seed and the profile name. The CLI passes these, never the whole params."""

    finetune: FinetuneConfig
    pretrain: PretrainConfig
    """The engine settings a fine-tune inherits (`FinetuneConfig.engine_config` says which)."""
    model: ModelConfig
    readers: ReadersConfig
    on_bad_record: Literal["skip", "abort"]
    """`instruct_mix.on_bad_record`: what task mode does with a bad record of a published train set."""
    seed: int
    profile: str

    @classmethod
    def of(cls, params: Any) -> FinetuneParams:
        """Pick the stage's sections out of a loaded params object (`biomed_llama.config.Params`)."""
        return cls(
            params.finetune,
            params.pretrain,
            params.model,
            params.readers,
            params.instruct_mix.on_bad_record,
            params.seed,
            params.profile,
        )


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


def _check_request(ft, mode: Mode, task: str | None, start: Start) -> None:
    if mode not in ("instruct", "task"):
        raise UserError(f"unknown finetune mode {mode!r}; use instruct or task")
    if mode == "task" and task is None:
        raise UserError(f"finetune --mode task needs --task (one of {', '.join(sorted(ft.tasks))})")
    if mode == "instruct" and task is not None:
        raise UserError("finetune --task is for --mode task only")
    if start not in ("pretrained", "base"):
        raise UserError(f"unknown fine-tune start {start!r}; use pretrained or base")
    if start == "base" and ft.base is None:
        raise UserError("finetune --base needs finetune.base (the LLaMA-7B rows' start model)")
    if mode == "task" and task not in ft.tasks:
        raise UserError(f"unknown fine-tune task {task!r}; finetune.tasks has {sorted(ft.tasks)}")


def finetune_spec(
    params: FinetuneParams, mode: Mode, task: str | None = None, *, start: Start = "pretrained", seed: int | None = None
) -> TrainSpec:
    """The engine spec of a fine-tune run of `mode` (and `task` in task mode) from `start`, with `seed` if given."""
    from pydantic import ValidationError

    from biomed_llama.schema import describe_error

    ft = params.finetune
    _check_request(ft, mode, task, start)
    start_model = ft.start_of(start)[0]
    if not (Path(start_model) / "config.json").is_file() or not (Path(start_model) / "tokenizer_config.json").is_file():
        raise UserError(
            f"finetune start model {start_model}: not a HF model directory with its tokenizer "
            "(run the stage that exports it first)"
        )
    external, opt_in = ft.external_of(start)
    has_manifest = require_trusted_model(start_model, external=external, opt_in=opt_in)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start_model)
    from biomed_llama.instruct.finetune_data import build_sft_dataset

    # Built here (every rank, the same deterministic tokenization) for the step count; the engine asks for it again.
    ds = build_sft_dataset(ft, mode, task, tokenizer, params.readers, params.on_bad_record)
    try:
        cfg = ft.engine_config(params.pretrain, mode, task, len(ds), start, seed)
        model = ModelConfig.model_validate({**params.model.model_dump(), "base": start_model})
    except ValidationError as e:
        raise ConfigError(describe_error(e, f"finetune --mode {mode}: effective engine params")) from None
    data_input = ft.mixture if task is None else ft.tasks[task].path  # `_check_request`: a task in task mode only
    stats = ds.stats()
    start_id = _start_model_id(start_model)
    run_seed = params.seed if seed is None else seed
    return TrainSpec(
        stage="finetune",
        seed=run_seed,
        cfg=cfg,
        model=model,
        dataset=lambda: (ds, int(ds.tokens.max()) + 1 if len(ds.tokens) else None),
        # a stage's output carries a manifest and is checked; an external model (the opt-in) has none: its files
        # are hashed into the fingerprint below and, as an input, into the export's manifest
        verify=([start_model] if has_manifest else []) + ([ft.mixture] if mode == "instruct" else []),
        inputs=[start_model, data_input],
        manifest_params={
            "seed": run_seed,
            "profile": params.profile,
            "mode": mode,
            "task": task,
            "start": start,
            "model": model.section_dict(),
            "finetune": ft.section_dict(),
            "engine": cfg.model_dump(mode="json"),
        },
        data_fingerprint={
            "mode": mode,
            "task": task,
            "examples": ds.fingerprint(),
            "start_model": start_id or _downloaded_model_id(start_model),
        },
        extra_metrics={
            "mode": mode,
            "task": task,
            "start": start,
            "seed": run_seed,
            **{f"data_{k}": v for k, v in stats.items()},
        },
        resume_hint="finetune.checkpoints",
    )


def run_finetune(
    params: FinetuneParams, mode: Mode, task: str | None = None, start: Start = "pretrained", seed: int | None = None
) -> TrainResult | None:
    """Fine-tune `start`'s model in `mode` (one run) through the engine; export, metrics and plots on rank 0."""
    return run_training(finetune_spec(params, mode, task, start=start, seed=seed))


def run_task_seeds(
    params: FinetuneParams, task: str, start: Start = "pretrained"
) -> dict[int | None, TrainResult | None]:
    """Every seed of `task` (`finetune.tasks.<task>.seeds`) in turn, one process group for all.

    With a seed list, rank 0 rewrites the task's metrics file after each run with every finished seed's
    metrics (`{"seeds": [...], "seed-<s>": {...}}`), so the file ends with all of them. Returns the results
    by seed (None: the single run of a task without a seed list)."""
    from biomed_llama.stage_metrics import split_metrics, write_split
    from biomed_llama.train.metrics import HEADLINE

    ft = params.finetune
    _check_request(ft, "task", task, start)
    seeds = ft.seeds_of(task)
    results: dict[int | None, TrainResult | None] = {}
    for i, seed in enumerate(seeds):
        last = i == len(seeds) - 1
        results[seed] = run_training(
            finetune_spec(params, "task", task, start=start, seed=seed), keep_process_group=not last
        )
        done = {s: r for s, r in results.items() if r is not None}
        if seed is not None and done:
            parts = {f"seed-{s}": split_metrics(r.metrics, HEADLINE) for s, r in done.items()}
            write_split(
                ft.run_paths("task", task, start, seed).metrics,
                {"seeds": list(done), **{k: head for k, (head, _) in parts.items()}},
                {k: details for k, (_, details) in parts.items()},
            )
    return results
