"""Throughput, FLOPs and MFU, and the loss-curve / final-metrics files.

MFU counts, per trained token, 6·N FLOPs for the non-embedding parameters N (the LM head is
counted: it is a matmul) plus 12·L·d·S for attention scores and values (L layers, width d,
sequence S), as in the PaLM paper's appendix and the project's anchor scripts, against a per-device
dense bf16 peak: H100/H200 SXM 989 TFLOP/s, A100 312 TFLOP/s. Unknown devices and CPUs report
MFU as null rather than a guess.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from biomed_llama.stage_metrics import write_metrics

# Dense bf16 tensor-core peak (no sparsity), TFLOP/s × 1e12, matched against the device name.
PEAK_BF16 = [("H200", 989e12), ("H100", 989e12), ("A100", 312e12)]

LOSS_COLUMNS = ["step", "loss", "grad_norm", "lr", "tokens_per_s"]
# What `dvc metrics show` lists of a training run: loss, steps, throughput, memory, the checkpoint stalls and
# (fine-tuning) the examples; the model size, device, mesh and data statistics go to the details file.
HEADLINE = ("final_loss", "steps", "tokens_seen", "tokens_per_s", "tokens_per_s_per_device", "mfu", "peak_memory_gib",
            "checkpoint_saves", "data_examples")


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


class LossCurve:
    """`plots/pretrain/loss.tsv`, appended per log step; a resume first drops rows past the resumed step.

    A resumed run whose file lost its earlier rows (DVC removes a stage's outputs before rerunning it,
    e.g. after a code change, and the run then resumes from its last checkpoint) gets them back from
    the checkpointed loss history: step and loss (the other columns are not checkpointed, left empty).
    """

    def __init__(self, folder: str | Path, resume_step: int, history: dict[int, float] | None = None):
        self.path = Path(folder) / "loss.tsv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f, delimiter="\t") if int(r["step"]) <= resume_step]
        kept = {int(r["step"]) for r in rows}
        lost = sorted(s for s in (history or {}) if s <= resume_step and s not in kept)
        if lost:
            rows = sorted(rows + [{"step": s, "loss": repr(float(history[s]))} for s in lost], key=lambda r: int(r["step"]))
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, LOSS_COLUMNS, delimiter="\t", lineterminator="\n", restval="")
            w.writeheader()
            w.writerows(rows)

    def append(self, row: dict) -> None:
        """Add one row (floats written with repr precision so curves compare exactly)."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOSS_COLUMNS, delimiter="\t", lineterminator="\n").writerow(
                {k: repr(row[k]) if isinstance(row[k], float) else row[k] for k in LOSS_COLUMNS})


def read_loss_curve(folder: str | Path) -> list[dict]:
    """Rows of `loss.tsv` as dicts of numbers (for tests and reports)."""
    with open(Path(folder) / "loss.tsv", newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(f, delimiter="\t")]


def write_final_metrics(path: str | Path, metrics: dict) -> None:
    """Write a run's headline metrics (`HEADLINE`) to `path` and the rest beside it (biomed_llama/stage_metrics.py)."""
    write_metrics(path, metrics, HEADLINE)


def format_log_line(step: int, total: int, loss: float, grad_norm: float, lr: float, tok_s: float,
                    mfu_value: float | None, mem: float | None) -> str:
    """The one log line per log step."""
    parts = [f"step {step}/{total}", f"loss {loss:.4f}", f"gnorm {grad_norm:.3f}", f"lr {lr:.3e}",
             f"tok/s {tok_s:,.0f}", "mfu " + (f"{100 * mfu_value:.1f}%" if mfu_value is not None else "n/a"),
             "mem " + (f"{mem:.1f}GiB" if mem is not None else "n/a")]
    return " | ".join(parts)
