"""`biomed-llama pretrain`: continued pretraining of a LLaMA on the tokenized PubMed stream.

Wires the pieces together: process group and mesh, data, model (meta build → parallelize →
materialise → init / load base weights / resume), optimizer and schedule, the loop, then the HF
export and the metrics. One process per GPU under torchrun; a world of one without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from biomed_llama.train import metrics as M


@dataclass
class PretrainResult:
    """What `run_pretrain` returns on rank 0 (None elsewhere): metrics, per-step losses and the export path."""

    metrics: dict[str, Any]
    losses: dict[int, float]
    output: Path | None


def _progress(enabled: bool, total: int, start: int):
    """A rich progress bar (rank 0, stderr) or a null context; yields an `advance(n)` callable."""
    if not enabled:
        return contextlib.nullcontext(lambda n: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        with Progress("pretrain", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), redirect_stdout=False, transient=False) as p:
            task = p.add_task("pretrain", total=total, completed=start)
            yield lambda n: p.advance(task, n)

    return bar()


def _vocab_from_tokenizer(path: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(path))


# Fields that change only speed or bookkeeping, not the numbers trained: a resume may change them.
_RESUME_FREE = {"micro_batch_size", "device", "shard_size", "reshard_after_forward", "compile",
                "activation_checkpointing", "log_every", "checkpoint_every", "keep_checkpoints", "checkpoint_dir",
                "output", "export_dtype", "metrics", "plots", "progress"}


def verify_inputs_on_main(env, tokens: str) -> None:
    """Rank 0 checks the token store against its manifest; every rank fails together if it does not match."""
    from biomed_llama.errors import IntegrityError
    from biomed_llama.provenance import require_verified
    from biomed_llama.train.mesh import all_reduce_cpu

    problem = None
    if env.is_main:
        try:
            require_verified(tokens)
        except IntegrityError as e:
            problem = e
    (failed,) = all_reduce_cpu([1.0 if problem else 0.0])
    if problem:
        raise problem
    if failed:
        raise IntegrityError(f"rank 0 refused the input {tokens} (see its error)")


def run_fingerprint(params, total_steps: int) -> str:
    """Hash of everything that determines the trained numbers (seed, model, data, optimisation, steps)."""
    pre = {k: v for k, v in params.pretrain.model_dump(mode="json").items() if k not in _RESUME_FREE}
    model = {k: v for k, v in params.model.model_dump(mode="json").items() if k != "attention"}
    blob = json.dumps({"seed": params.seed, "model": model, "pretrain": pre, "steps": total_steps}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_resumable(checkpoint: Path, run_id: str) -> None:
    """Refuse to resume a checkpoint written by a run with other params (one clear line)."""
    from biomed_llama.errors import UserError
    from biomed_llama.train.checkpoint import TRAINER_FILE

    theirs = json.loads((checkpoint / TRAINER_FILE).read_text()).get("run")
    if theirs != run_id:
        raise UserError(f"{checkpoint} was written by a run with other params (run {theirs}, this one {run_id}); "
                        "restore those params, or remove the folder / set another pretrain.checkpoint_dir")


def build_everything(params, env, mesh):
    """Data loader, sharded model and its HF config, optimizer, scheduler and step count (no weights yet)."""
    from biomed_llama.data.loader import DistributedLoader, PackedDataset, open_stores
    from biomed_llama.errors import UserError
    from biomed_llama.model.attention import check_attention
    from biomed_llama.model.build import build_meta_model, llama_config
    from biomed_llama.train.optim import build_optimizer, build_scheduler
    from biomed_llama.train.parallelize import parallelize

    cfg, mcfg = params.pretrain, params.model
    if not (Path(cfg.tokenizer) / "tokenizer_config.json").is_file():
        raise UserError(f"pretrain.tokenizer={cfg.tokenizer}: not a HF tokenizer directory (no tokenizer_config.json)")
    stores = open_stores(cfg.tokens, cfg.subsets, cfg.split)
    dataset = PackedDataset(stores, cfg.max_seq_length, cfg.packing)
    loader = DistributedLoader(dataset, global_batch=cfg.global_batch_size, micro_batch=cfg.micro_batch_size,
                               dp_rank=env.rank, dp_size=env.world_size, seed=params.seed, shuffle=cfg.shuffle)
    total = cfg.max_steps or loader.steps_per_epoch
    check_attention(mcfg.attention, env.device)
    config = llama_config(mcfg, None if (mcfg.base or mcfg.vocab_size) else _vocab_from_tokenizer(cfg.tokenizer))
    data_vocab = int(stores[0].meta["vocab_size"])
    if data_vocab > config.vocab_size:
        raise UserError(f"tokens were made with a vocabulary of {data_vocab}, the model has {config.vocab_size}")
    if cfg.max_seq_length > config.max_position_embeddings:
        raise UserError(f"pretrain.max_seq_length {cfg.max_seq_length} exceeds the model's "
                        f"max_position_embeddings {config.max_position_embeddings}")
    model = build_meta_model(config)
    parallelize(model, mesh, cfg)
    model.to_empty(device=env.device)
    optimizer = build_optimizer(model, cfg, env.device)
    scheduler = build_scheduler(optimizer, cfg, total)
    return loader, model, config, optimizer, scheduler, total


def run_pretrain(params) -> PretrainResult | None:
    """Run (or resume) pretraining as `params` say; export the HF model and write metrics on rank 0."""
    from biomed_llama.config import section_dict
    from biomed_llama.model.build import count_params, init_weights, load_hf_weights, reset_rotary
    from biomed_llama.train import checkpoint as C
    from biomed_llama.train.export import export_hf
    from biomed_llama.train.loop import LoopConfig, LoopResult, StopFlag, TrainingInterrupted, print_line, train_loop
    from biomed_llama.train.mesh import build_mesh, init_distributed, shutdown

    cfg, mcfg = params.pretrain, params.model
    env = init_distributed(cfg.device)
    stop = StopFlag().install()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        verify_inputs_on_main(env, cfg.tokens)
        mesh = build_mesh(env, cfg.shard_size)
        loader, model, config, optimizer, scheduler, total = build_everything(params, env, mesh)
        n_params, n_embed = count_params(model)
        flops_tok = M.flops_per_token(n_params, n_embed, config.num_hidden_layers, config.hidden_size, cfg.max_seq_length)
        start, history = 0, None
        resume = C.latest_checkpoint(cfg.checkpoint_dir)
        run_id = run_fingerprint(params, total)
        if resume is not None:
            check_resumable(resume, run_id)
            reset_rotary(model)
            state = C.load_checkpoint(resume, model, optimizer)
            scheduler.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["loader"])
            start, history = int(state["step"]), state.get("history")
        elif mcfg.base:
            load_hf_weights(model, mcfg.base)
        else:
            init_weights(model, params.seed, config.initializer_range)
        if env.is_main:
            mesh_desc = "×".join(str(s) for s in mesh.shape)
            print_line(f"pretrain: {n_params:,} params ({n_embed:,} embedding), mesh (replicate×shard) {mesh_desc} on "
                       f"{env.device.type}, accumulation {loader.accumulation}, steps {total}"
                       + (f", resumed from {resume.name}" if resume is not None else ""))
        curve = M.LossCurve(cfg.plots, start) if env.is_main else None
        record = LoopResult.from_history(start, history)
        loop_cfg = LoopConfig(total_steps=total, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                              max_grad_norm=cfg.max_grad_norm,
                              tokens_per_step=cfg.global_batch_size * cfg.max_seq_length,
                              flops_per_token=flops_tok, peak_flops=M.peak_flops(env.device))

        def save(step: int) -> None:
            C.save_checkpoint(cfg.checkpoint_dir, step, model, optimizer,
                              {"scheduler": scheduler.state_dict(), "loader": loader.state_dict(), "run": run_id,
                               "history": record.history()},
                              cfg.keep_checkpoints)

        with _progress(env.is_main and cfg.progress, total, start) as advance:
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
                                      f"saved in {cfg.checkpoint_dir}; rerun to resume", result.interrupted_by)
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
            "n_params": n_params, "n_embedding_params": n_embed,
        }
        inputs = [cfg.tokens] + ([mcfg.base] if mcfg.base else [])
        out = export_hf(model, config, cfg.output, tokenizer=cfg.tokenizer, dtype=cfg.export_dtype,
                        params={"seed": params.seed, "model": section_dict(mcfg), "pretrain": section_dict(cfg)},
                        inputs=inputs, extra={"metrics": metrics})
        if not env.is_main:
            return None
        M.write_final_metrics(cfg.metrics, metrics)
        print_line("pretrain: done " + json.dumps({k: metrics[k] for k in ("final_loss", "tokens_seen", "mfu")}))
        return PretrainResult(metrics=metrics, losses=result.losses, output=out)
    finally:
        stop.uninstall()
        shutdown()
