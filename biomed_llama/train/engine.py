"""The training engine of every stage (pretraining, instruction tuning, task fine-tuning).

`run_training(spec)` runs one stage; a `TrainSpec` says what differs between stages (the effective
engine and model params, the dataset, the fingerprint's data part, the manifest):

- build (`build`): process group and mesh, data loader, meta model → parallelize → materialise,
  optimizer, scheduler and step count, held by the `Trainer` (`biomed_llama.train.trainer`) that
  runs them (the benchmarks drive this same trainer);
- restore (`restore`): the run folder; the starting weights (`model.base` or the seeded init) and
  their optional export (`export_init`), or the newest checkpoint of the run's own folder, through
  the trainer's checkpointer;
- fit (`Trainer.fit`) with the run's callbacks (`run_callbacks`: log, console, progress, checkpoints,
  and `ExportCallback`, the HF export once the budget is spent); a non-finite step stops it (exit 5);
- finish (`finish`): the final metrics and loss curve from the checkpointed history.

One process per GPU under torchrun; a world of one without it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from biomed_llama.data.loader import DistributedLoader, grad_accumulation
from biomed_llama.model.config import ModelConfig
from biomed_llama.train import metrics as M
from biomed_llama.train.callbacks import Callback, CheckpointCallback, LogCallback, LoopEnd
from biomed_llama.train.config import PretrainConfig
from biomed_llama.train.log import ConsoleCallback, ProgressCallback, print_line
from biomed_llama.train.mesh import DistEnv
from biomed_llama.train.step import StepOptions, TrainStep, loss_weighting
from biomed_llama.train.trainer import StopFlag, Trainer


@dataclass
class TrainSpec:
    """What one training stage gives the engine (everything else comes from `cfg`)."""

    stage: str
    """Stage name: log prefix, progress label and the exported manifest's `stage`."""
    seed: int
    """Seeds the init and the data order."""
    cfg: PretrainConfig
    """Effective engine config (a fine-tune run's: `FinetuneConfig.engine_config`)."""
    model: ModelConfig
    """Effective model params; `base` is the HF directory to start from (null: random init)."""
    dataset: Callable[[], tuple[Any, int | None]]
    """Called on every rank: (dataset with `len()` and `.sequence(i)`, largest token id + 1 it holds or None)."""
    verify: list[str] = field(default_factory=list)
    """Input folders rank 0 checks against their manifests before anything is built."""
    inputs: list[str] = field(default_factory=list)
    """Inputs recorded in the exported model's manifest."""
    manifest_params: dict[str, Any] = field(default_factory=dict)
    """Params recorded in the exported model's manifest."""
    data_fingerprint: dict[str, Any] | None = None
    """Run-fingerprint material identifying the data by content; replaces the token-stream fields of `cfg`
    (None: those fields, paths included, stand for the data)."""
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    """Merged into the final metrics."""
    resume_hint: str = "pretrain.checkpoint_dir"
    """The param to name when a checkpoint's recorded run does not match its run folder."""


@dataclass
class TrainResult:
    """What `run_training` returns on rank 0 (None elsewhere): metrics, per-step losses and the export path."""

    metrics: dict[str, Any]
    losses: dict[int, float]
    output: Path | None


def _vocab_from_tokenizer(path: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(path))


def _model_config(spec: TrainSpec, device: torch.device, data_vocab: int | None):
    """The HF config of the model to build, checked against the data and the attention kernel."""
    from biomed_llama.errors import UserError
    from biomed_llama.model.attention import check_attention
    from biomed_llama.model.build import llama_config

    cfg, mcfg = spec.cfg, spec.model
    check_attention(mcfg.attention, device)
    config = llama_config(mcfg, None if (mcfg.base or mcfg.vocab_size) else _vocab_from_tokenizer(cfg.tokenizer))
    if cfg.added_tokens:  # the released fine-tuning's [PAD] rows (evaluation/main.py:98-103), loaded as the mean
        if not mcfg.base:
            raise UserError(f"{spec.stage}: added vocabulary rows are the mean of model.base's; set model.base")
        config.vocab_size += cfg.added_tokens
    if data_vocab is not None and data_vocab > config.vocab_size:
        raise UserError(f"tokens were made with a vocabulary of {data_vocab}, the model has {config.vocab_size}")
    if cfg.max_seq_length > config.max_position_embeddings:
        raise UserError(
            f"{spec.stage}: sequence length {cfg.max_seq_length} exceeds the model's "
            f"max_position_embeddings {config.max_position_embeddings}"
        )
    return config


def build(spec: TrainSpec) -> Trainer:
    """Process group and mesh, data loader, sharded model (materialised, no weights yet), optimizer, scheduler and
    step, in the `Trainer` that runs them (no callbacks, no checkpointer yet)."""
    from biomed_llama.model.build import build_meta_model, count_params
    from biomed_llama.train.mesh import build_mesh, init_distributed, use_deterministic_kernels
    from biomed_llama.train.optim import build_optimizer, build_scheduler
    from biomed_llama.train.parallelize import parallelize
    from biomed_llama.train.runs import verify_inputs_on_main

    cfg = spec.cfg
    use_deterministic_kernels(cfg.deterministic)  # before the first CUDA call: cuBLAS reads its workspace then
    env = init_distributed(cfg.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    verify_inputs_on_main(env, spec.verify)
    mesh = build_mesh(env, cfg.shard_size)
    accumulation = grad_accumulation(cfg.global_batch_size, cfg.micro_batch_size, env.world_size)
    dataset, data_vocab = spec.dataset()
    loader = DistributedLoader(
        dataset,
        global_batch=cfg.global_batch_size,
        micro_batch=cfg.micro_batch_size,
        dp_rank=env.rank,
        dp_size=env.world_size,
        seed=spec.seed,
        shuffle=cfg.shuffle,
        released=cfg.released_loader,
    )
    total = cfg.max_steps or loader.steps_per_epoch
    config = _model_config(spec, env.device, data_vocab)
    model = build_meta_model(config)
    kernels = _kernels(model, cfg, env)
    parallelize(model, mesh, cfg)
    model.to_empty(device=env.device)
    optimizer = build_optimizer(model, cfg.optim, env.device)
    scheduler = build_scheduler(optimizer, cfg.optim, total)
    step = TrainStep(
        model,
        optimizer,
        scheduler,
        env.device,
        env.world_size,
        cfg.optim.max_grad_norm,
        loss=loss_weighting(cfg.loss_weighting),
        options=_step_options(cfg, env, accumulation, model),
    )
    return Trainer(
        spec,
        env,
        mesh,
        loader,
        model,
        config,
        optimizer,
        scheduler,
        step,
        total,
        accumulation,
        *count_params(model),
        kernels=kernels,
    )


def _kernels(model, cfg: PretrainConfig, env: DistEnv) -> list[str]:
    """Swap in the fused kernels asked for; on CPU say (rank 0) that the plain modules run instead."""
    from biomed_llama.model.kernels import apply_kernels

    applied = apply_kernels(model, list(cfg.kernels), env.device)
    if cfg.kernels and not applied and env.is_main:
        print_line(
            f"pretrain.kernels {', '.join(cfg.kernels)}: CUDA only (liger-kernel); the plain modules run "
            f"on {env.device.type}"
        )
    return applied


def _step_options(cfg: PretrainConfig, env: DistEnv, accumulation: int, model) -> StepOptions:
    """The step's speed options from the params: gradient sync, gathered parameters, SDPA kernel, and whether the
    model's own weighted loss runs (the fused or the compiled head; else HF's loss for token weighting)."""
    import functools

    from biomed_llama.model.attention import sdpa_context
    from biomed_llama.train.parallelize import gathered_modules

    return StepOptions(
        sync_every_micro=cfg.grad_sync == "every",
        keep_gathered=tuple(gathered_modules(model, cfg)) if accumulation > 1 else (),
        weighted_head=bool(getattr(model, "weighted_loss_only", False)),
        forward_context=functools.partial(sdpa_context, cfg.sdpa_backend, env.device),
    )


def starting_weights(tr: Trainer) -> None:
    """Fill the materialised model with its starting weights: `model.base`, or the seeded random init."""
    from biomed_llama.model.build import init_weights, load_hf_weights

    if tr.spec.model.base:
        load_hf_weights(tr.model, tr.spec.model.base, added_rows=tr.cfg.added_tokens)
    else:
        init_weights(tr.model, tr.spec.seed, tr.config.initializer_range)


def _export_init(tr: Trainer, out: str) -> None:
    """The starting weights as a HF model in `out` (`pretrain.export_init`: the demo's stand-in for the untrained
    base row); exporting reads the weights only, so training from here is unchanged."""
    from biomed_llama.train.export import export_hf

    spec, cfg = tr.spec, tr.cfg
    export_hf(
        tr.model,
        tr.config,
        out,
        tokenizer=cfg.tokenizer,
        dtype=cfg.export_dtype,
        params={"seed": spec.seed, "model": spec.manifest_params.get("model")},
        inputs=[spec.model.base] if spec.model.base else [],
        extra={"init_of": cfg.output},
        stage="init",
        drop_rows=cfg.added_tokens,
    )


def restore(tr: Trainer) -> Path | None:
    """Find this run's folder and open the trainer's checkpointer there; load the starting weights (and export them
    if asked) or resume the folder's newest checkpoint (returned; None: a fresh start)."""
    from biomed_llama.train.runs import check_resumable, run_folder, spec_fingerprint

    spec, cfg, env = tr.spec, tr.cfg, tr.env
    run_id = spec_fingerprint(spec.seed, spec.model, cfg, tr.total_steps, spec.data_fingerprint)
    run_dir, resume = run_folder(cfg.checkpoint_dir, run_id, spec.stage, env.is_main)
    if resume is not None:
        check_resumable(resume, run_id, spec.resume_hint)
    if resume is None or cfg.export_init:
        starting_weights(tr)
    if cfg.export_init:
        _export_init(tr, cfg.export_init)
    tr.open_checkpoints(run_dir, run_id)
    if resume is not None:
        tr.load_checkpoint(resume)
    if env.is_main:
        mesh = "×".join(str(s) for s in tr.mesh.shape)
        print_line(
            f"{spec.stage}: {tr.n_params:,} params ({tr.n_embed:,} embedding), mesh (replicate×shard) {mesh} "
            f"on {env.device.type}, accumulation {tr.accumulation}, steps {tr.total_steps}"
            + (f", resumed from {run_id}/{resume.name}" if resume is not None else "")
        )
    return resume


def run_callbacks(tr: Trainer) -> list[Callback]:
    """A run's callbacks, in order: the log step (every rank), rank 0's log line and progress bar, checkpoints."""
    cfg, env = tr.cfg, tr.env
    shown: list[Callback] = [ConsoleCallback(tr.total_steps)] if env.is_main else []
    if env.is_main and cfg.progress:
        shown.append(ProgressCallback(tr.total_steps, tr.spec.stage))
    return [LogCallback(every=cfg.log_every), *shown, CheckpointCallback(every=cfg.checkpoint_every)]


def final_metrics(tr: Trainer, end: LoopEnd, saves: list | None = None) -> dict[str, Any]:
    """The stage's metrics: final loss, tokens, mean throughput and MFU, memory, mesh and model size."""
    env, history = tr.env, tr.history
    # Throughput: skip the first sample (compile, allocator warm-up) when there are others. Every value comes
    # from the checkpointed history (and saves), so a rerun that resumes at the end writes the same file.
    samples = history.tokens_per_s[1:] or history.tokens_per_s
    tok_s = sum(samples) / len(samples) if samples else None
    per_dev = tok_s / env.world_size if tok_s else None
    peak_mem = history.peak_memory_gib()
    return {
        "final_loss": history.losses[max(history.losses)] if history.losses else None,
        "steps": end.step,
        "tokens_seen": end.step * tr.tokens_per_step,
        "tokens_per_s": tok_s,
        "tokens_per_s_per_device": per_dev,
        "mfu": M.mfu(per_dev, tr.flops_per_token, M.peak_flops(env.device)) if per_dev else None,
        "flops_per_token": tr.flops_per_token,
        "peak_memory_gib": peak_mem if peak_mem is not None else M.memory_gib(env.device),
        "world_size": env.world_size,
        "mesh": list(tr.mesh.shape),
        "device": env.device.type,
        "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
        "n_params": tr.n_params,
        "n_embedding_params": tr.n_embed,
        "kernels": tr.kernels,
        "checkpoint_saves": [dataclasses.asdict(r) for r in saves or []],
        "skipped_steps": list(history.skipped),
        **tr.spec.extra_metrics,
    }


class ExportCallback(Callback):
    """Once the step budget is spent: export the HF model (a collective), its manifest holding the metrics so far
    (an async checkpoint may still be written meanwhile: the trainer closes the checkpointer after this)."""

    output: Path | None = None
    """The export folder (rank 0; None elsewhere or before the export)."""

    def post_train(self, end: LoopEnd) -> None:
        from biomed_llama.train.export import export_hf

        tr = self.trainer
        spec, cfg = tr.spec, tr.cfg
        self.output = export_hf(
            tr.model,
            tr.config,
            cfg.output,
            tokenizer=cfg.tokenizer,
            dtype=cfg.export_dtype,
            params=spec.manifest_params,
            inputs=spec.inputs,
            extra={"metrics": final_metrics(tr, end)},
            stage=spec.stage,
            drop_rows=cfg.added_tokens,
        )


def finish(tr: Trainer, end: LoopEnd, output: Path | None) -> TrainResult | None:
    """After the run (exported, checkpointer closed): rank 0 writes the metrics, with every checkpoint save, and the
    loss curve, and returns the result."""
    metrics = final_metrics(tr, end, tr.opened_checkpointer().saves)
    if not tr.env.is_main:
        return None
    M.write_final_metrics(tr.cfg.metrics, metrics)
    M.write_loss_curve(tr.cfg.plots, tr.history.rows)
    print_line(f"{tr.spec.stage}: done " + json.dumps({k: metrics[k] for k in ("final_loss", "tokens_seen", "mfu")}))
    return TrainResult(metrics=metrics, losses=tr.history.losses, output=output)


def run_training(spec: TrainSpec, *, keep_process_group: bool = False) -> TrainResult | None:
    """Run (or resume, from its own run folder) one training stage as `spec` says; export the HF model and
    write metrics on rank 0. `keep_process_group`: leave the process group up for a next run in this
    process (the seeds of a task fine-tune), instead of re-initialising it."""
    from biomed_llama.train.mesh import shutdown
    from biomed_llama.train.runs import hold_checkpoint_dir

    stop = StopFlag().install()
    try:
        with hold_checkpoint_dir(spec.cfg.checkpoint_dir, spec.stage):  # no second run beside this one
            trainer = build(spec)
            restore(trainer)
            export = ExportCallback()
            trainer.add_callbacks(*run_callbacks(trainer), export)
            end = trainer.fit(stop)
            return finish(trainer, end, export.output)
    finally:
        stop.uninstall()
        if not keep_process_group:
            shutdown()
