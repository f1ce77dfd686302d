"""The training engine of every stage (pretraining, instruction tuning, task fine-tuning).

`run_training(spec)` composes four phases; a `TrainSpec` says what differs between stages (the
effective engine and model params, the dataset, the fingerprint's data part, the manifest):

- build (`build`): process group and mesh, data loader, meta model → parallelize → materialise,
  optimizer, scheduler and step count, held by one `Trainer` (the benchmark calls exactly this);
- restore (`restore`): the run folder; the starting weights (`model.base` or the seeded init) and
  their optional export (`export_init`), or the newest checkpoint of the run's own folder;
- loop (`train`): `train_loop` with the log and checkpoint hooks; a non-finite step stops it (exit 5);
- finish (`finish`): the HF export, then the final metrics and loss curve from the checkpointed history.

One process per GPU under torchrun; a world of one without it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from biomed_llama.data.loader import DistributedLoader
from biomed_llama.model.config import ModelConfig
from biomed_llama.train import metrics as M
from biomed_llama.train.checkpoint import Checkpointer
from biomed_llama.train.config import PretrainConfig
from biomed_llama.train.hooks import RunHistory
from biomed_llama.train.loop import LoopEnd, StopFlag
from biomed_llama.train.mesh import DistEnv
from biomed_llama.train.step import StepOptions, TrainStep, loss_weighting


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


@dataclass
class Trainer:
    """Everything `build` made: the process's place, the data, the sharded model (no weights yet) and its step."""

    spec: TrainSpec
    env: DistEnv
    mesh: Any
    """The (`replicate`, `shard`) DeviceMesh."""
    loader: DistributedLoader
    model: torch.nn.Module
    config: Any
    """The model's HF `LlamaConfig`."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: TrainStep
    total_steps: int
    n_params: int
    n_embed: int
    kernels: list[str] = field(default_factory=list)
    """The fused kernels in use (`pretrain.kernels` on CUDA; none on CPU)."""

    @property
    def cfg(self) -> PretrainConfig:
        """The effective engine config."""
        return self.spec.cfg

    @property
    def tokens_per_step(self) -> int:
        """Sequence positions per optimizer step over all ranks."""
        return self.cfg.global_batch_size * self.cfg.max_seq_length

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token (`metrics.flops_per_token`)."""
        return M.flops_per_token(self.n_params, self.n_embed, self.config.num_hidden_layers, self.config.hidden_size,
                                 self.cfg.max_seq_length)


@dataclass
class Restored:
    """Where training starts: the run, its folder, the checkpoint resumed (None: fresh) and the restored state."""

    run_id: str
    run_dir: Path
    resume: Path | None
    start: int
    history: RunHistory
    checkpointer: Checkpointer


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
        raise UserError(f"{spec.stage}: sequence length {cfg.max_seq_length} exceeds the model's "
                        f"max_position_embeddings {config.max_position_embeddings}")
    return config


def build(spec: TrainSpec) -> Trainer:
    """Process group and mesh, data loader, sharded model (materialised, no weights yet), optimizer, scheduler."""
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
    dataset, data_vocab = spec.dataset()
    loader = DistributedLoader(dataset, global_batch=cfg.global_batch_size, micro_batch=cfg.micro_batch_size,
                               dp_rank=env.rank, dp_size=env.world_size, seed=spec.seed, shuffle=cfg.shuffle,
                               released=cfg.released_loader)
    total = cfg.max_steps or loader.steps_per_epoch
    config = _model_config(spec, env.device, data_vocab)
    model = build_meta_model(config)
    kernels = _kernels(model, cfg, env)
    parallelize(model, mesh, cfg)
    model.to_empty(device=env.device)
    optimizer = build_optimizer(model, cfg.optim, env.device)
    scheduler = build_scheduler(optimizer, cfg.optim, total)
    step = TrainStep(model, optimizer, scheduler, env.device, loader.dp_size, cfg.optim.max_grad_norm,
                     loss=loss_weighting(cfg.loss_weighting), options=_step_options(cfg, env, loader, model))
    return Trainer(spec, env, mesh, loader, model, config, optimizer, scheduler, step, total, *count_params(model),
                   kernels=kernels)


def _kernels(model, cfg: PretrainConfig, env: DistEnv) -> list[str]:
    """Swap in the fused kernels asked for; on CPU say (rank 0) that the plain modules run instead."""
    from biomed_llama.model.kernels import apply_kernels

    applied = apply_kernels(model, list(cfg.kernels), env.device)
    if cfg.kernels and not applied and env.is_main:
        from biomed_llama.train.loop import print_line

        print_line(f"pretrain.kernels {', '.join(cfg.kernels)}: CUDA only (liger-kernel); the plain modules run "
                   f"on {env.device.type}")
    return applied


def _step_options(cfg: PretrainConfig, env: DistEnv, loader: DistributedLoader, model) -> StepOptions:
    """The step's speed options from the params: gradient sync, gathered parameters, SDPA kernel, and whether the
    model's own weighted loss runs (the fused or the compiled head; else HF's loss for token weighting)."""
    import functools

    from biomed_llama.model.attention import sdpa_context
    from biomed_llama.train.parallelize import gathered_modules

    return StepOptions(sync_every_micro=cfg.grad_sync == "every",
                       keep_gathered=tuple(gathered_modules(model, cfg)) if loader.accumulation > 1 else (),
                       weighted_head=bool(getattr(model, "weighted_loss_only", False)),
                       forward_context=functools.partial(sdpa_context, cfg.sdpa_backend, env.device))


def starting_weights(tr: Trainer) -> None:
    """Fill the materialised model with its starting weights: `model.base`, or the seeded random init."""
    from biomed_llama.model.build import init_weights, load_hf_weights

    if tr.spec.model.base:
        load_hf_weights(tr.model, tr.spec.model.base, added_rows=tr.cfg.added_tokens)
    else:
        init_weights(tr.model, tr.spec.seed, tr.config.initializer_range)


def _export_init(tr: Trainer) -> None:
    """The starting weights as a HF model (the demo's stand-in for the untrained base row); exporting reads
    the weights only, so training from here is unchanged."""
    from biomed_llama.train.export import export_hf

    spec, cfg = tr.spec, tr.cfg
    export_hf(tr.model, tr.config, cfg.export_init, tokenizer=cfg.tokenizer, dtype=cfg.export_dtype,
              params={"seed": spec.seed, "model": spec.manifest_params.get("model")},
              inputs=[spec.model.base] if spec.model.base else [], extra={"init_of": cfg.output}, stage="init",
              drop_rows=cfg.added_tokens)


def restore(tr: Trainer) -> Restored:
    """Find this run's folder; load the starting weights (and export them if asked) or resume its newest checkpoint."""
    from biomed_llama.model.build import reset_rotary
    from biomed_llama.train.checkpoint import training_state
    from biomed_llama.train.runs import check_resumable, run_folder, spec_fingerprint

    spec, cfg, env = tr.spec, tr.cfg, tr.env
    run_id = spec_fingerprint(spec.seed, spec.model, cfg, tr.total_steps, spec.data_fingerprint)
    run_dir, resume = run_folder(cfg.checkpoint_dir, run_id, spec.stage, env.is_main)
    if resume is not None:
        check_resumable(resume, run_id, spec.resume_hint)
    if resume is None or cfg.export_init:
        starting_weights(tr)
    if cfg.export_init:
        _export_init(tr)
    history = RunHistory()
    parts = training_state(tr.model, tr.optimizer, tr.scheduler, tr.loader, history)
    checkpointer = Checkpointer(run_dir, parts, keep=cfg.keep_checkpoints, meta={"run": run_id},
                                async_save=cfg.checkpoint_async, device=env.device)
    tr.step.before_update.append(checkpointer.wait_for_staging)
    start = 0
    if resume is not None:
        reset_rotary(tr.model)
        start = checkpointer.load(resume)
    if env.is_main:
        from biomed_llama.train.loop import print_line

        mesh = "×".join(str(s) for s in tr.mesh.shape)
        print_line(f"{spec.stage}: {tr.n_params:,} params ({tr.n_embed:,} embedding), mesh (replicate×shard) {mesh} "
                   f"on {env.device.type}, accumulation {tr.loader.accumulation}, steps {tr.total_steps}"
                   + (f", resumed from {run_id}/{resume.name}" if resume is not None else ""))
    return Restored(run_id, run_dir, resume, start, history, checkpointer)


def train(tr: Trainer, rs: Restored, stop: StopFlag) -> LoopEnd:
    """Run the loop from `rs.start` with the log hook (rank 0: log line, progress) and checkpoints.

    A non-finite step stops the run there (after `max_nonfinite_skips` skipped ones): DivergedError, exit 5,
    nothing exported and no metrics written, the checkpoints saved so far (all finite) kept.
    """
    from biomed_llama.train.hooks import CheckpointHook, LogHook, console_sink, progress_bar
    from biomed_llama.train.loop import TrainingInterrupted, train_loop

    cfg, env, total = tr.cfg, tr.env, tr.total_steps
    with progress_bar(env.is_main and cfg.progress, total, rs.start, tr.spec.stage) as advance:
        sinks = [console_sink(total), advance] if env.is_main else []
        log = LogHook(every=cfg.log_every, total_steps=total, tokens_per_step=tr.tokens_per_step,
                      flops_per_token=tr.flops_per_token, env=env, history=rs.history, sinks=sinks)
        save = CheckpointHook(rs.checkpointer, every=cfg.checkpoint_every, total_steps=total,
                              check=lambda step: _require_finite_weights(tr, rs, step))
        if env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(env.device)
        end = train_loop(tr.step, tr.loader, start=rs.start, total_steps=total, stop=stop, callbacks=[log, save],
                         max_skips=cfg.max_nonfinite_skips, skipped=rs.history.skipped)
    if end.interrupted_by:
        rs.checkpointer.close()
        raise TrainingInterrupted(f"stopped by signal {end.interrupted_by} at step {end.step}; checkpoint "
                                  f"saved in {rs.run_dir}; rerun the same command to resume", end.interrupted_by)
    if end.nonfinite is not None:
        bad = end.nonfinite
        _diverged(tr, rs, f"non-finite {bad.what} at step {end.diverged_at} (loss {bad.loss}, grad norm "
                          f"{bad.grad_norm}); that update was not applied")
    return end


def _diverged(tr: Trainer, rs: Restored, what: str) -> None:
    """Stop the run with one line (DivergedError, exit 5) naming `what` and the last finite checkpoint kept."""
    from biomed_llama.errors import DivergedError
    from biomed_llama.train.checkpoint import latest_checkpoint

    rs.checkpointer.close()
    last = latest_checkpoint(rs.run_dir)
    kept = f"the last finite checkpoint {last} is kept" if last else "no checkpoint was saved"
    skips = rs.history.skipped
    skipped = f" after skipping {len(skips)} (steps {', '.join(map(str, skips))})" if skips else ""
    raise DivergedError(f"{tr.spec.stage}: {what}{skipped}; stopped: nothing exported, no metrics written, {kept} "
                        f"(lower the learning rate, or let pretrain.max_nonfinite_skips skip such steps)")


def _require_finite_weights(tr: Trainer, rs: Restored, step: int) -> None:
    """Before a save: weights that are not finite (a finite but huge update overflowed them) stop the run unsaved."""
    from biomed_llama.train.step import weights_finite

    if not weights_finite(tr.model):
        _diverged(tr, rs, f"non-finite weights after step {step}; not saved")


def final_metrics(tr: Trainer, history: RunHistory, end: LoopEnd, saves: list | None = None) -> dict[str, Any]:
    """The stage's metrics: final loss, tokens, mean throughput and MFU, memory, mesh and model size."""
    env = tr.env
    # Throughput: skip the first sample (compile, allocator warm-up) when there are others. Every value comes
    # from the checkpointed history (and saves), so a rerun that resumes at the end writes the same file.
    samples = history.tokens_per_s[1:] or history.tokens_per_s
    tok_s = sum(samples) / len(samples) if samples else None
    per_dev = tok_s / env.world_size if tok_s else None
    peak_mem = history.peak_memory_gib()
    return {
        "final_loss": history.losses[max(history.losses)] if history.losses else None,
        "steps": end.step, "tokens_seen": end.step * tr.tokens_per_step,
        "tokens_per_s": tok_s, "tokens_per_s_per_device": per_dev,
        "mfu": M.mfu(per_dev, tr.flops_per_token, M.peak_flops(env.device)) if per_dev else None,
        "flops_per_token": tr.flops_per_token,
        "peak_memory_gib": peak_mem if peak_mem is not None else M.memory_gib(env.device),
        "world_size": env.world_size, "mesh": list(tr.mesh.shape), "device": env.device.type,
        "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
        "n_params": tr.n_params, "n_embedding_params": tr.n_embed, "kernels": tr.kernels,
        "checkpoint_saves": [dataclasses.asdict(r) for r in saves or []], "skipped_steps": list(history.skipped),
        **tr.spec.extra_metrics,
    }


def finish(tr: Trainer, rs: Restored, end: LoopEnd) -> TrainResult | None:
    """Export the HF model (a collective; an async checkpoint may still be written meanwhile), complete the
    last checkpoint and, on rank 0, write the metrics; rank 0 returns the result."""
    from biomed_llama.train.export import export_hf
    from biomed_llama.train.loop import print_line

    spec, cfg, history = tr.spec, tr.cfg, rs.history
    metrics = final_metrics(tr, history, end)
    out = export_hf(tr.model, tr.config, cfg.output, tokenizer=cfg.tokenizer, dtype=cfg.export_dtype,
                    params=spec.manifest_params, inputs=spec.inputs, extra={"metrics": metrics}, stage=spec.stage,
                    drop_rows=cfg.added_tokens)
    rs.checkpointer.close()
    metrics = final_metrics(tr, history, end, rs.checkpointer.saves)
    if not tr.env.is_main:
        return None
    M.write_final_metrics(cfg.metrics, metrics)
    M.write_loss_curve(cfg.plots, history.rows)
    print_line(f"{spec.stage}: done " + json.dumps({k: metrics[k] for k in ("final_loss", "tokens_seen", "mfu")}))
    return TrainResult(metrics=metrics, losses=history.losses, output=out)


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
            restored = restore(trainer)
            end = train(trainer, restored, stop)
            return finish(trainer, restored, end)
    finally:
        stop.uninstall()
        if not keep_process_group:
            shutdown()
