"""Throughput, FLOPs and MFU, and the loss-curve / final-metrics files.

MFU counts, per trained token, 6·N FLOPs for the non-embedding parameters N (the LM head is
counted: it is a matmul) plus 12·L·d·S for attention scores and values (L layers, width d,
sequence S), as in the PaLM paper's appendix and the project's anchor scripts, against a per-device
dense bf16 peak: H100/H200 SXM 989 TFLOP/s, A100 312 TFLOP/s. Unknown devices and CPUs report
MFU as null rather than a guess.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from biomed_llama.fsutil import atomic_write_text
from biomed_llama.stage_metrics import write_metrics

# Dense bf16 tensor-core peak (no sparsity), TFLOP/s × 1e12, matched against the device name.
PEAK_BF16 = [("H200", 989e12), ("H100", 989e12), ("A100", 312e12)]

LOSS_COLUMNS = ["step", "loss", "grad_norm", "lr", "tokens_per_s"]
# What `dvc metrics show` lists of a training run: loss, steps, throughput, memory, the checkpoint stalls and
# (fine-tuning) the examples; the model size, device, mesh and data statistics go to the details file.
HEADLINE = (
    "final_loss",
    "steps",
    "tokens_seen",
    "tokens_per_s",
    "tokens_per_s_per_device",
    "mfu",
    "peak_memory_gib",
    "checkpoint_saves",
    "data_examples",
    "skipped_steps",
)


def flops_per_token(n_params: int, n_embed: int, n_layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·(N − embedding) + 12·L·d·S."""
    return 6.0 * (n_params - n_embed) + 12.0 * n_layers * hidden * seq_len


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of `device` from the table, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16:
        if key in name:
            return peak
    return None


def mfu(tokens_per_s_per_device: float, flops_tok: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None without a known peak."""
    return None if not peak else tokens_per_s_per_device * flops_tok / peak


def memory_gib(device: torch.device) -> float | None:
    """Peak allocated memory on `device` in GiB since the last reset (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def loss_curve_text(rows: dict[int, dict]) -> str:
    """`loss.tsv` of the logged rows: step and the LOSS_COLUMNS, floats at repr precision (curves compare exactly),
    an empty cell where a value is unknown (None: a non-finite loss of a skipped step, or a row of a checkpoint
    written before rows were kept)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOSS_COLUMNS, delimiter="\t", lineterminator="\n", restval="", extrasaction="ignore")
    w.writeheader()
    for step in sorted(rows):
        row = {**rows[step], "step": step}
        w.writerow({k: repr(v) if isinstance(v, float) else ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_loss_curve(folder: str | Path, rows: dict[int, dict]) -> None:
    """Write `<folder>/loss.tsv` (DVC plots) atomically from the run's checkpointed log rows.

    Written once, when the run finishes, from the history rather than appended while it runs: a run that
    stops (diverged, refused, interrupted) leaves the pipeline's curve as it was, and a rerun that resumes at
    the final checkpoint rewrites the same bytes. The log line of each step shows the curve live.
    """
    atomic_write_text(Path(folder) / "loss.tsv", loss_curve_text(rows))


def read_loss_curve(folder: str | Path) -> list[dict]:
    """Rows of `loss.tsv` as dicts of numbers, None for an empty cell (for tests and reports)."""
    with open(Path(folder) / "loss.tsv", newline="") as f:
        return [
            {k: (None if v == "" else int(v) if k == "step" else float(v)) for k, v in r.items()}
            for r in csv.DictReader(f, delimiter="\t")
        ]


def write_final_metrics(path: str | Path, metrics: dict) -> None:
    """Write a run's headline metrics (`HEADLINE`) to `path` and the rest beside it (biomed_llama/stage_metrics.py),
    atomically; a NaN or infinite value is written as null (`fsutil.finite_json`)."""
    write_metrics(path, metrics, HEADLINE)


def format_log_line(
    step: int,
    total: int,
    loss: float,
    grad_norm: float,
    lr: float,
    tok_s: float,
    mfu_value: float | None,
    mem: float | None,
) -> str:
    """The one log line per log step."""
    parts = [
        f"step {step}/{total}",
        f"loss {loss:.4f}",
        f"gnorm {grad_norm:.3f}",
        f"lr {lr:.3e}",
        f"tok/s {tok_s:,.0f}",
        "mfu " + (f"{100 * mfu_value:.1f}%" if mfu_value is not None else "n/a"),
        "mem " + (f"{mem:.1f}GiB" if mem is not None else "n/a"),
    ]
    return " | ".join(parts)
