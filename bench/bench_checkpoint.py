"""Checkpoint cost of the engine: a sync save, then two async saves, of the full training state.

Under torchrun, the engine's `build`, its seeded init and its step, and the engine's `Checkpointer` over the
engine's state registry. Sequence: warm-up steps, clean steps (the baseline step time), a sync save (stall = its
whole time), then two async saves; after each async save the loop keeps training, one step at a time, until no
rank's save is still being copied, written or hashed. Per save it records the stall (what the loop waited), the
host copy's time (async), the step time while the files were written, and the time lost to the save: the
elapsed time from the save call until it was complete minus the clean time of the steps trained meanwhile. The
async checkpointer reserves its pinned host buffers first (`HostStager`, in the background), as the engine does
after the first update (`Checkpointer.prestage`); both async saves refill them. Each checkpoint is removed once
complete (the disk holds one). Rank 0 appends one JSON line per event to `<out>/checkpoint.jsonl`.

    torchrun --nproc-per-node 2 -m bench.bench_checkpoint --shape 7b --dir /tmp/ckpt --out DIR
    torchrun --nproc-per-node 1 -m bench.bench_checkpoint --shape 7b16 --compile --micro 4 --dir /tmp/ckpt --out DIR
    python -m bench.bench_checkpoint --shape tiny --dir /tmp/ckpt --out DIR      # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path



def _emit(out: Path, row: dict, main: bool) -> None:
    if main:
        with open(out / "checkpoint.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def _steps(tr, n: int) -> float:
    """Run n engine steps; mean seconds per step (device-synchronised)."""
    import torch
    from bench.bench_pretrain import engine_step

    t0 = time.perf_counter()
    for _ in range(n):
        engine_step(tr)
    if tr.env.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def _clean(tr, n: int) -> float:
    """Mean seconds of n single steps, each synchronised as the steps beside a save are."""
    return sum(_steps(tr, 1) for _ in range(n)) / n


def _train_while_saving(tr, ck) -> int:
    """Train single steps until no rank's save is in flight (at least one); the number of steps."""
    from biomed_llama.train.mesh import all_reduce_cpu

    n = 0
    while True:
        _steps(tr, 1)
        n += 1
        (busy,) = all_reduce_cpu([float(ck.in_flight())])
        if busy == 0:
            return n


def main() -> None:
    import torch
    import torch.distributed as dist
    from bench.bench_pretrain import SHAPES, bench_spec, build_parser

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--dir", required=True, help="where checkpoints are written (one at a time)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--micro", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="per-block compile, as the profiles train")
    args = ap.parse_args()
    from biomed_llama.train.callbacks import CheckpointCallback
    from biomed_llama.train.checkpoint import Checkpointer, training_state
    from biomed_llama.train.engine import build, starting_weights
    from biomed_llama.train.mesh import init_distributed, shutdown

    env = init_distributed("auto")
    # bench_pretrain's own `run` options, its defaults for all but these: the same spec a `run` of them builds
    run = build_parser().parse_args(["run", "--shape", args.shape, "--micro", str(args.micro), "--steps", "1000",
                                     "--name", "checkpoint", "--out", args.out] + (["--compile"] if args.compile else []))
    tr = build(bench_spec(run, env.world_size, env.device.type == "cuda"))
    starting_weights(tr)
    out, root = Path(args.out), Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = training_state(tr.model, tr.optimizer, tr.scheduler, tr.loader, tr.history)
    _steps(tr, 3)  # compile, allocator, optimizer state
    base = _clean(tr, 4)
    _emit(out, {"event": "steps", "s_per_step": base, "world": env.world_size, "shape": args.shape,
                "micro": args.micro, "compile": args.compile, "torch": torch.__version__}, env.is_main)
    sync = Checkpointer(root, parts, keep=1, meta={"run": "bench"}, device=env.device)
    background = Checkpointer(root, parts, keep=1, meta={"run": "bench"}, async_save=True, device=env.device)
    background.prestage()  # as the engine's checkpoint callback does after the first update
    # the engine's checkpoint callback on the trainer: before each update it waits for the host copy of the
    # trainer's checkpointer (each mode's, set below); between saves it lets an async save become complete
    tr.add_callbacks(CheckpointCallback(every=None))
    for mode, ck in (("sync", sync), ("async", background), ("async", background)):
        tr.checkpointer = ck
        t0 = time.perf_counter()
        path = ck.save(tr.loader.step)
        saved = time.perf_counter()
        n = _train_while_saving(tr, ck) if mode == "async" else 0
        ck.wait()
        done = time.perf_counter()
        rec = ck.saves[-1]
        clean = _clean(tr, 3)  # after the save: the step time without one
        size = sum(p.stat().st_size for p in path.iterdir()) if env.is_main and path.is_dir() else None
        _emit(out, {"event": "save", "mode": mode, "step": rec.step, "stall_s": rec.stall_s,
                    "staged_s": rec.staged_s, "complete_s": rec.complete_s, "until_complete_s": done - t0,
                    "steps_during": n, "s_per_step_during": (done - saved) / n if n else None,
                    "s_per_step_clean": clean, "lost_s": (done - t0) - n * clean, "bytes": size}, env.is_main)
        if env.is_main:
            shutil.rmtree(root, ignore_errors=True)
        dist.barrier()
    background.close()
    shutdown()


if __name__ == "__main__":
    main()
