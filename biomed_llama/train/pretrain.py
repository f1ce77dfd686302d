"""The training engine, and `biomed-llama pretrain`: continued pretraining on the tokenized PubMed stream.

Wires the pieces together: process group and mesh, data, model (meta build → parallelize →
materialise → init / load base weights / resume), optimizer and schedule, the loop, then the HF
export and the metrics. One process per GPU under torchrun; a world of one without it.

`run_training(spec)` is the engine; a `TrainSpec` says what differs between stages (the effective
engine and model params, the dataset, the fingerprint's data part, the manifest). `run_pretrain`
builds the pretrain spec (packed token stream); `biomed_llama.train.finetune` builds the SFT one.

Checkpoints live in run folders (as OLMo / torchtitan do): `<checkpoint_dir>/<run_id>/step-NNNNNNNN/`,
where `run_id` is the run fingerprint (`spec_fingerprint`: seed, model, numeric params, steps and the
CONTENT identity of the data). A rerun with the same params and data (a Slurm requeue, `dvc repro`
after an interruption) finds its own folder and resumes; a run with other params or data starts
fresh in a folder of its own and leaves the other runs' checkpoints alone. So a DVC stage whose
checkpoint folder is a `persist: true` out reruns correctly after any param or upstream change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from biomed_llama.train import metrics as M


@dataclass
class PretrainResult:
    """What `run_pretrain` returns on rank 0 (None elsewhere): metrics, per-step losses and the export path."""

    metrics: dict[str, Any]
    losses: dict[int, float]
    output: Path | None


@dataclass
class TrainSpec:
    """What one training stage gives the engine (everything else comes from `cfg`)."""

    stage: str
    """Stage name: log prefix, progress label and the exported manifest's `stage`."""
    seed: int
    """Seeds the init and the data order."""
    cfg: Any
    """Effective `PretrainConfig` (a fine-tune run: `params.pretrain.model_copy(update=…)`)."""
    model: Any
    """Effective `ModelConfig`; `base` is the HF directory to start from (null: random init)."""
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


def _progress(enabled: bool, total: int, start: int, label: str = "pretrain"):
    """A rich progress bar (rank 0, stderr) or a null context; yields an `advance(n)` callable."""
    if not enabled:
        return contextlib.nullcontext(lambda n: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        with Progress(label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), redirect_stdout=False, transient=False) as p:
            task = p.add_task(label, total=total, completed=start)
            yield lambda n: p.advance(task, n)

    return bar()


def _vocab_from_tokenizer(path: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(path))


# Fields that change only speed or bookkeeping, not the numbers trained: a resume may change them.
_RESUME_FREE = {"micro_batch_size", "device", "shard_size", "reshard_after_forward", "compile",
                "activation_checkpointing", "log_every", "checkpoint_every", "keep_checkpoints", "checkpoint_dir",
                "output", "export_dtype", "export_init", "metrics", "plots", "progress"}
# Fields that only say where the packed token stream comes from: a run with its own dataset
# fingerprint (fine-tuning) leaves them out.
_STREAM_FIELDS = {"tokens", "subsets", "split", "packing"}


def verify_inputs_on_main(env, tokens: str | list[str]) -> None:
    """Rank 0 checks input folders against their manifests; every rank fails together if one does not match."""
    from biomed_llama.errors import IntegrityError
    from biomed_llama.provenance import require_verified
    from biomed_llama.train.mesh import all_reduce_cpu

    folders = [tokens] if isinstance(tokens, str) else list(tokens)
    problem = None
    if env.is_main:
        try:
            for folder in folders:
                require_verified(folder)
        except IntegrityError as e:
            problem = e
    (failed,) = all_reduce_cpu([1.0 if problem else 0.0])
    if problem:
        raise problem
    if failed:
        raise IntegrityError(f"rank 0 refused an input of {', '.join(folders)} (see its error)")


def run_fingerprint(params, total_steps: int) -> str:
    """Hash of everything that determines the trained numbers (seed, model, data, optimisation, steps)."""
    return spec_fingerprint(params.seed, params.model, params.pretrain, total_steps, stream_fingerprint(params.pretrain))


def manifest_files_id(folder: str | Path) -> str | None:
    """sha256 over the `files` section (path → sha256, bytes) of `folder/manifest.json`; None without one.

    Only the file hashes: the rest of a manifest (environment, params) changes with every commit
    while the data stays the same.
    """
    from biomed_llama.provenance import MANIFEST

    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return None  # the input check (`require_verified`) names the problem
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def stream_fingerprint(cfg) -> dict[str, Any]:
    """The packed token stream's identity: its content (the tokenize manifest's file hashes) and how it is cut.

    The `tokens` path itself is left out: moving the folder does not change the run, new content does.
    """
    return {"tokens_files": manifest_files_id(cfg.tokens), "subsets": list(cfg.subsets), "split": cfg.split,
            "packing": cfg.packing}


def spec_fingerprint(seed: int, model_cfg, cfg, total_steps: int, data: dict[str, Any] | None = None) -> str:
    """The run fingerprint from the effective params; `data` (if given) replaces the token-stream fields."""
    skip = _RESUME_FREE | (_STREAM_FIELDS if data is not None else set())
    pre = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in skip}
    model = {k: v for k, v in model_cfg.model_dump(mode="json").items() if k != "attention"}
    what = {"seed": seed, "model": model, "pretrain": pre, "steps": total_steps}
    if data is not None:
        what["data"] = data
    blob = json.dumps(what, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_resumable(checkpoint: Path, run_id: str, hint: str = "pretrain.checkpoint_dir") -> None:
    """Refuse a checkpoint in this run's folder whose trainer.json records another run (moved or edited by hand)."""
    from biomed_llama.errors import UserError
    from biomed_llama.train.checkpoint import TRAINER_FILE

    theirs = json.loads((checkpoint / TRAINER_FILE).read_text()).get("run")
    if theirs != run_id:
        raise UserError(f"{checkpoint} lies in the folder of run {run_id} but was written by run {theirs}; "
                        f"remove that folder (or restore it) under {hint}")


def run_folder(root: str | Path, run_id: str, stage: str, is_main: bool) -> tuple[Path, Path | None]:
    """This run's checkpoint folder `root/run_id` and its newest complete checkpoint (None: a fresh start).

    On a fresh start rank 0 prints one line naming the folder and the other runs' folders beside it
    (left untouched: checkpoints of other params or data are never resumed nor pruned).
    """
    from biomed_llama.train.checkpoint import latest_checkpoint
    from biomed_llama.train.loop import print_line

    root = Path(root)
    folder = root / run_id
    resume = latest_checkpoint(folder)
    if resume is None and is_main:
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != run_id) if root.is_dir() else []
        print_line(f"{stage}: new run {run_id}, checkpoints in {folder}"
                   + (f"; other runs' folders there, left untouched: {', '.join(others)}" if others else ""))
    return folder, resume


def pretrain_spec(params) -> TrainSpec:
    """The pretrain stage: the packed PubMed token stream, from a random init or `model.base`."""
    from biomed_llama.config import section_dict
    from biomed_llama.errors import UserError

    cfg, mcfg = params.pretrain, params.model

    def dataset():
        from biomed_llama.data.loader import PackedDataset, open_stores

        if not (Path(cfg.tokenizer) / "tokenizer_config.json").is_file():
            raise UserError(f"pretrain.tokenizer={cfg.tokenizer}: not a HF tokenizer directory (no tokenizer_config.json)")
        stores = open_stores(cfg.tokens, cfg.subsets, cfg.split)
        return PackedDataset(stores, cfg.max_seq_length, cfg.packing), int(stores[0].meta["vocab_size"])

    return TrainSpec(stage="pretrain", seed=params.seed, cfg=cfg, model=mcfg, dataset=dataset, verify=[cfg.tokens],
                     inputs=[cfg.tokens] + ([mcfg.base] if mcfg.base else []),
                     manifest_params={"seed": params.seed, "model": section_dict(mcfg), "pretrain": section_dict(cfg)},
                     data_fingerprint=stream_fingerprint(cfg))


def build_everything(params, env, mesh, spec: TrainSpec | None = None):
    """Data loader, sharded model and its HF config, optimizer, scheduler and step count (no weights yet).

    `spec` defaults to the pretrain stage of `params`.
    """
    from biomed_llama.data.loader import DistributedLoader
    from biomed_llama.errors import UserError
    from biomed_llama.model.attention import check_attention
    from biomed_llama.model.build import build_meta_model, llama_config
    from biomed_llama.train.optim import build_optimizer, build_scheduler
    from biomed_llama.train.parallelize import parallelize

    spec = spec or pretrain_spec(params)
    cfg, mcfg = spec.cfg, spec.model
    dataset, data_vocab = spec.dataset()
    loader = DistributedLoader(dataset, global_batch=cfg.global_batch_size, micro_batch=cfg.micro_batch_size,
                               dp_rank=env.rank, dp_size=env.world_size, seed=spec.seed, shuffle=cfg.shuffle)
    total = cfg.max_steps or loader.steps_per_epoch
    check_attention(mcfg.attention, env.device)
    config = llama_config(mcfg, None if (mcfg.base or mcfg.vocab_size) else _vocab_from_tokenizer(cfg.tokenizer))
    if data_vocab is not None and data_vocab > config.vocab_size:
        raise UserError(f"tokens were made with a vocabulary of {data_vocab}, the model has {config.vocab_size}")
    if cfg.max_seq_length > config.max_position_embeddings:
        raise UserError(f"{spec.stage}: sequence length {cfg.max_seq_length} exceeds the model's "
                        f"max_position_embeddings {config.max_position_embeddings}")
    model = build_meta_model(config)
    parallelize(model, mesh, cfg)
    model.to_empty(device=env.device)
    optimizer = build_optimizer(model, cfg, env.device)
    scheduler = build_scheduler(optimizer, cfg, total)
    return loader, model, config, optimizer, scheduler, total


def run_pretrain(params) -> PretrainResult | None:
    """Run (or resume) pretraining as `params` say; export the HF model and write metrics on rank 0."""
    return run_training(pretrain_spec(params))


def _starting_weights(spec: TrainSpec, model, config) -> None:
    """Fill the materialised model with its starting weights: `model.base`, or the seeded random init."""
    from biomed_llama.model.build import init_weights, load_hf_weights

    if spec.model.base:
        load_hf_weights(model, spec.model.base)
    else:
        init_weights(model, spec.seed, config.initializer_range)


def run_training(spec: TrainSpec) -> PretrainResult | None:
    """Run (or resume, from its own run folder) one training stage as `spec` says; export the HF model and
    write metrics on rank 0."""
    from biomed_llama.model.build import count_params, reset_rotary
    from biomed_llama.train import checkpoint as C
    from biomed_llama.train.export import export_hf
    from biomed_llama.train.loop import LoopConfig, LoopResult, StopFlag, TrainingInterrupted, print_line, train_loop
    from biomed_llama.train.mesh import build_mesh, init_distributed, shutdown

    cfg, mcfg, stage = spec.cfg, spec.model, spec.stage
    env = init_distributed(cfg.device)
    stop = StopFlag().install()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        verify_inputs_on_main(env, spec.verify)
        mesh = build_mesh(env, cfg.shard_size)
        loader, model, config, optimizer, scheduler, total = build_everything(None, env, mesh, spec)
        n_params, n_embed = count_params(model)
        flops_tok = M.flops_per_token(n_params, n_embed, config.num_hidden_layers, config.hidden_size, cfg.max_seq_length)
        start, history = 0, None
        run_id = spec_fingerprint(spec.seed, mcfg, cfg, total, spec.data_fingerprint)
        run_dir, resume = run_folder(cfg.checkpoint_dir, run_id, stage, env.is_main)
        if resume is not None:
            check_resumable(resume, run_id, spec.resume_hint)
        if resume is None or cfg.export_init:
            _starting_weights(spec, model, config)
        if cfg.export_init:
            # The starting weights as a HF model (the demo's stand-in for the untrained base row);
            # exporting reads the weights only, so training from here is unchanged.
            export_hf(model, config, cfg.export_init, tokenizer=cfg.tokenizer, dtype=cfg.export_dtype,
                      params={"seed": spec.seed, "model": spec.manifest_params.get("model")},
                      inputs=[mcfg.base] if mcfg.base else [], extra={"init_of": cfg.output}, stage="init")
        if resume is not None:
            reset_rotary(model)
            state = C.load_checkpoint(resume, model, optimizer)
            scheduler.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["loader"])
            start, history = int(state["step"]), state.get("history")
        if env.is_main:
            mesh_desc = "×".join(str(s) for s in mesh.shape)
            print_line(f"{stage}: {n_params:,} params ({n_embed:,} embedding), mesh (replicate×shard) {mesh_desc} on "
                       f"{env.device.type}, accumulation {loader.accumulation}, steps {total}"
                       + (f", resumed from {run_id}/{resume.name}" if resume is not None else ""))
        curve = M.LossCurve(cfg.plots, start) if env.is_main else None
        record = LoopResult.from_history(start, history)
        loop_cfg = LoopConfig(total_steps=total, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                              max_grad_norm=cfg.max_grad_norm,
                              tokens_per_step=cfg.global_batch_size * cfg.max_seq_length,
                              flops_per_token=flops_tok, peak_flops=M.peak_flops(env.device))

        def save(step: int) -> None:
            C.save_checkpoint(run_dir, step, model, optimizer,
                              {"scheduler": scheduler.state_dict(), "loader": loader.state_dict(), "run": run_id,
                               "history": record.history()},
                              cfg.keep_checkpoints)

        with _progress(env.is_main and cfg.progress, total, start, stage) as advance:
            shown = [start]

            def on_log(row: dict) -> None:
                if env.is_main:
                    curve.append(row)
                    print_line(M.format_log_line(row["step"], total, row["loss"], row["grad_norm"], row["lr"],
                                                 row["tokens_per_s"], row["mfu"], row["memory_gib"]))
                    advance(row["step"] - shown[0])
                    shown[0] = row["step"]

            if env.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(env.device)
            result = train_loop(model, optimizer, scheduler, loader, env, loop_cfg, result=record, stop=stop,
                                save=save, on_log=on_log)
        if result.interrupted_by:
            raise TrainingInterrupted(f"stopped by signal {result.interrupted_by} at step {result.step}; checkpoint "
                                      f"saved in {run_dir}; rerun the same command to resume", result.interrupted_by)
        # Throughput: skip the first sample (compile, allocator warm-up) when there are others.
        samples = result.tokens_per_s[1:] or result.tokens_per_s
        tok_s = sum(samples) / len(samples) if samples else None
        per_dev = tok_s / env.world_size if tok_s else None
        final_loss = result.losses[max(result.losses)] if result.losses else None
        metrics = {
            "final_loss": final_loss, "steps": result.step, "tokens_seen": result.step * loop_cfg.tokens_per_step,
            "tokens_per_s": tok_s, "tokens_per_s_per_device": per_dev,
            "mfu": M.mfu(per_dev, flops_tok, loop_cfg.peak_flops) if per_dev else None,
            "flops_per_token": flops_tok, "peak_memory_gib": M.memory_gib(env.device),
            "world_size": env.world_size, "mesh": list(mesh.shape), "device": env.device.type,
            "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
            "n_params": n_params, "n_embedding_params": n_embed, **spec.extra_metrics,
        }
        out = export_hf(model, config, cfg.output, tokenizer=cfg.tokenizer, dtype=cfg.export_dtype,
                        params=spec.manifest_params, inputs=spec.inputs, extra={"metrics": metrics}, stage=stage)
        if not env.is_main:
            return None
        M.write_final_metrics(cfg.metrics, metrics)
        print_line(f"{stage}: done " + json.dumps({k: metrics[k] for k in ("final_loss", "tokens_seen", "mfu")}))
        return PretrainResult(metrics=metrics, losses=result.losses, output=out)
    finally:
        stop.uninstall()
        shutdown()
