#!/usr/bin/env python3
"""bench/e2e.sh's tables: per-stage wall time and peak GPU memory of a `dvc repro`, and a weight diff.

    python -m bench.e2e_table summary --log REPRO_LOG --mem GPU_MEM --root WORK [--fail "a; b; "]
    python -m bench.e2e_table diff MODEL_DIR_A MODEL_DIR_B

`summary` reads the time-stamped `dvc repro` log (each line `<unix time> <text>`; a stage runs from its
`Running stage 'NAME':` line to the next one or to the line `e2e: repro TARGET exit RC`), the GPU memory
samples (`<unix time> <MiB used>`, nvidia-smi every 0.5 s: the whole card, every process), and torch's own
peak from each training stage's metrics file (`peak_memory_gib`: the largest allocated by the stage's
process). It prints one row per stage, the total, and PASS or the list of failed checks.
`diff` says how far two exported models' weights are apart (max |Δ| per tensor), for a resume whose
sha256 differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

STAGE = re.compile(r"Running stage '([^']+)'")


def stage_windows(log: Path) -> tuple[list[tuple[str, float, float]], float | None]:
    """[(stage, start, end)] in the order they ran, and the input generation's seconds (None if not logged).

    A stage's window ends at the next stage's `Running stage` line or at a `e2e: repro … exit` line (the
    end of one `dvc repro`; bench/e2e.sh runs other work between two)."""
    windows, current, gen = [], None, None
    for line in log.read_text(errors="replace").splitlines():
        ts, _, text = line.partition(" ")
        try:
            t = float(ts)
        except ValueError:
            continue
        m = STAGE.search(text)
        if m or text.startswith("e2e: repro"):
            if current:
                windows.append((current[0], current[1], t))
            current = (m.group(1), t) if m else None
        elif text.startswith("e2e: inputs"):
            a, b = (float(x) for x in text.split()[2:4])
            gen = b - a
    if current:  # cut off without an end line: up to the last line seen
        windows.append((current[0], current[1], t))
    return windows, gen


def mem_samples(path: Path) -> list[tuple[float, float]]:
    """[(time, MiB used)] of the sampler's file (empty without a GPU)."""
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                try:
                    out.append((float(parts[0]), float(parts[1])))
                except ValueError:
                    continue
    return out


def metrics_file(root: Path, stage: str) -> Path | None:
    """The metrics JSON a training stage writes (paper.yaml's paths), or None for other stages."""
    name, _, item = stage.partition("@")
    files = {"pretrain": "metrics/pretrain.json", "finetune-instruct": "metrics/finetune_instruct.json",
             "finetune-instruct-base": "metrics/finetune_base-instruct.json",
             "finetune-task": f"metrics/finetune_{item}.json", "finetune-task-base": f"metrics/finetune_base-{item}.json"}
    return root / files[name] if name in files else None


def peak_gib(obj) -> float | None:
    """The largest `peak_memory_gib` anywhere in a metrics JSON (a task with seeds has one per seed)."""
    found = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "peak_memory_gib" and isinstance(v, (int, float)):
                    found.append(float(v))
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(obj)
    return max(found) if found else None


def summary(args) -> int:
    """Print the per-stage table and the checks' verdict."""
    windows, gen = stage_windows(args.log)
    samples = mem_samples(args.mem)
    rows = ["| stage | wall (s) | peak GPU memory, card (GiB, sampled) | torch peak allocated (GiB) |",
            "|---|---:|---:|---:|"]
    if gen is not None:
        rows.append(f"| (generate inputs) | {gen:.1f} | | |")
    total = 0.0
    for name, start, end in windows:
        used = [m for t, m in samples if start <= t <= end]
        card = f"{max(used) / 1024:.1f}" if used else "–"
        mf = metrics_file(args.root, name)
        torch_peak = peak_gib(json.loads(mf.read_text())) if mf and mf.is_file() else None
        rows.append(f"| {name} | {end - start:.1f} | {card} | {'–' if torch_peak is None else f'{torch_peak:.1f}'} |")
        total += end - start
    rows.append(f"| **dvc repro evaluate** | **{total:.1f}** ({total / 60:.1f} min) | "
                f"{max((m for _, m in samples), default=0) / 1024:.1f} | |")
    print("\n".join(rows))
    failed = [f.strip() for f in (args.fail or "").split(";") if f.strip()]
    ran = ("second repro and status no-ops, every verify" if "pipeline" in args.phases.split() else "",
           "resumed weights equal" if "resume" in args.phases.split() else "")
    print("\nchecks: " + (f"PASS ({', '.join(r for r in ran if r)})" if not failed else "FAILED: " + "; ".join(failed)))
    return 0


def diff(args) -> int:
    """Print max |Δ| per tensor of two HF model folders' model.safetensors (the first ten that differ)."""
    from safetensors.torch import load_file

    a = load_file(str(Path(args.a) / "model.safetensors"))
    b = load_file(str(Path(args.b) / "model.safetensors"))
    if a.keys() != b.keys():
        print(f"different tensors: {sorted(a.keys() ^ b.keys())[:10]}")
        return 1
    deltas = {k: float((a[k].float() - b[k].float()).abs().max()) for k in sorted(a)}
    differing = {k: d for k, d in deltas.items() if d > 0}
    print(f"{len(differing)} of {len(deltas)} tensors differ; max |Δ| {max(deltas.values()):.3g}")
    for k, d in list(differing.items())[:10]:
        print(f"  {k}: {d:.3g}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary")
    s.add_argument("--log", type=Path, required=True)
    s.add_argument("--mem", type=Path, required=True)
    s.add_argument("--root", type=Path, required=True)
    s.add_argument("--fail", default="")
    s.add_argument("--phases", default="pipeline resume", help="the phases that ran: the verdict names their checks only")
    d = sub.add_parser("diff")
    d.add_argument("a")
    d.add_argument("b")
    args = ap.parse_args()
    return summary(args) if args.cmd == "summary" else diff(args)


if __name__ == "__main__":
    sys.exit(main())
