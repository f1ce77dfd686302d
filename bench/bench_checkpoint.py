"""Checkpoint stall of the engine: a sync save, then two async saves, of the full training state.

Under torchrun (the 7B shape over 1×2 GPUs: 73 GB of DCP files), the engine's `build`, its seeded
init and its step, and the engine's `Checkpointer` over the engine's state registry. Sequence:
steps, a sync save (stall = its whole time), steps, an async save (stall = the save call + the wait
for the host copy before the next update) with steps timed while it is written, then a second async
save. The async checkpointer reserves its pinned host buffers first (`HostStager`, in the background),
as the engine does after the first update (`Checkpointer.prestage`); both async saves refill them. Each
checkpoint is removed once complete (the disk holds one). Rank 0 appends one JSON line per event to
`<out>/checkpoint.jsonl` as it happens.

    torchrun --nproc-per-node 2 bench/bench_checkpoint.py --shape 7b --dir /tmp/ckpt --out DIR
    python bench/bench_checkpoint.py --shape tiny --dir /tmp/ckpt --out DIR      # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _emit(out: Path, row: dict, main: bool) -> None:
    if main:
        with open(out / "checkpoint.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def _steps(tr, n: int) -> float:
    """Run n engine steps; mean seconds per step (device-synchronised)."""
    import torch

    from biomed_llama.train.mesh import all_reduce_cpu

    t0 = time.perf_counter()
    for _ in range(n):
        micros = tr.loader.next_batch()
        (total,) = all_reduce_cpu([float(tr.step.count(micros))])
        tr.step(micros, int(total))
    if tr.env.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main() -> None:
    import torch
    import torch.distributed as dist
    from bench_pretrain import SHAPES, bench_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--dir", required=True, help="where checkpoints are written (one at a time)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from biomed_llama.train.checkpoint import Checkpointer, training_state
    from biomed_llama.train.engine import build, starting_weights
    from biomed_llama.train.hooks import RunHistory
    from biomed_llama.train.mesh import init_distributed, shutdown

    env = init_distributed("auto")
    ns = argparse.Namespace(shape=args.shape, micro=1, acc=1, steps=100, lr=3e-4, attention="sdpa",
                            reduce_dtype="float32", shard=None, no_reshard=False, compile=False, ac="none",
                            loss_weighting="token", sdpa_backend="auto", kernels="", grad_sync="last")
    tr = build(bench_spec(ns, env.world_size, env.device.type == "cuda"))
    starting_weights(tr)
    out, root = Path(args.out), Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = training_state(tr.model, tr.optimizer, tr.scheduler, tr.loader, RunHistory())
    base = _steps(tr, 3)
    _emit(out, {"event": "steps", "s_per_step": base, "world": env.world_size, "shape": args.shape,
                "torch": torch.__version__}, env.is_main)
    sync = Checkpointer(root, parts, keep=1, meta={"run": "bench"}, device=env.device)
    background = Checkpointer(root, parts, keep=1, meta={"run": "bench"}, async_save=True, device=env.device)
    background.prestage()  # as the engine's checkpoint hook does after the first update
    for mode, ck in (("sync", sync), ("async", background), ("async", background)):
        tr.step.before_update[:] = [ck.wait_for_staging]
        t0 = time.perf_counter()
        path = ck.save(tr.loader.step)
        during = _steps(tr, 4)  # the async write goes on meanwhile
        ck.wait()
        rec = ck.saves[-1]
        size = sum(p.stat().st_size for p in path.iterdir()) if env.is_main and path.is_dir() else None
        _emit(out, {"event": "save", "mode": mode, "step": rec.step, "stall_s": rec.stall_s,
                    "complete_s": rec.complete_s, "until_complete_s": time.perf_counter() - t0,
                    "s_per_step_during": during, "bytes": size}, env.is_main)
        if env.is_main:
            shutil.rmtree(root, ignore_errors=True)
        dist.barrier()
    background.close()
    shutdown()


if __name__ == "__main__":
    main()
