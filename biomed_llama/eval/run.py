"""The `evaluate` and `report` stages: models (and their seed runs) × suites × shots through lm-eval, metrics,
the chance baseline, the table with its cells, the loss figure."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from biomed_llama.config import Params
from biomed_llama.errors import UserError
from biomed_llama.eval import harness
from biomed_llama.eval.aggregate import chance_accuracy, combine_members, model_members
from biomed_llama.eval.config import TABLE_METRICS, EvalConfig
from biomed_llama.eval.table import RANDOM, render_table, table_cells
from biomed_llama.fsutil import atomic_write_json, atomic_write_text
from biomed_llama.provenance import require_verified


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_model(name: str, path: str) -> list[tuple[str, Path]]:
    """The model's members (itself, or its seed runs), each checked against its manifest where it has one."""
    members = model_members(name, path)
    for _, folder in members:
        if (folder / "manifest.json").is_file():
            require_verified(folder)
    return members


def _evaluate_member(cfg: EvalConfig, tm, runs: list, folder: Path, out_dir: Path, prog, bar) -> dict[str, float]:
    """All runs of one model folder: flat metrics; full results, samples and timing under `out_dir`."""
    lm = harness.load_lm(harness.hf_model_args(cfg, str(folder)), cfg.pair_encoding)
    metrics: dict[str, float] = {}
    timing = {}
    for run in runs:
        if prog:
            prog.update(bar, description=f"{out_dir.name}: {run.key}")
        res = harness.run_one(lm, tm, run, cfg.limit)
        metrics.update(harness.flat_metrics(run, res))
        timing[run.key] = res["biomed_wall_s"]
        harness.save_run(out_dir, run, res)
        if prog:
            prog.advance(bar)
    atomic_write_json(out_dir / "timing.json", timing)
    del lm  # one model in memory at a time (the paper profile evaluates many 7B models)
    _free_accelerator_memory()
    return metrics


def evaluate(params: Params) -> dict[str, dict[str, float]]:
    """Run every configured (model, suite, task, shots) of the models with a path (each seed of a seed-run folder);
    write metrics (and chance accuracy), full results, the table, its cells and the loss figure. Return metrics."""
    cfg = params.eval
    require_verified(cfg.output)
    members = {name: _check_model(name, m.path) for name, m in cfg.models.items() if m.path}
    measured = cfg.model_copy(update={"models": {n: m for n, m in cfg.models.items() if m.path}})
    runs = harness.plan_runs(measured)
    tm = harness.task_manager(Path(cfg.output) / "tasks")
    metrics: dict[str, dict[str, float]] = {}
    with _progress(cfg.progress) as prog:
        total = sum(len([r for r in runs if r.model == n]) * len(ms) for n, ms in members.items())
        bar = prog.add_task("evaluate", total=total) if prog else None
        for name, ms in members.items():
            mine = [r for r in runs if r.model == name]
            per_member = {}
            for label, folder in ms:
                if prog:
                    prog.update(bar, description=f"{name}: loading {folder}")
                out_dir = Path(cfg.results_dir) / name / label if label else Path(cfg.results_dir) / name
                per_member[label] = _evaluate_member(cfg, tm, mine, folder, out_dir, prog, bar)
            metrics[name] = combine_members(per_member)
            atomic_write_json(Path(cfg.metrics_dir) / f"{name}.json", metrics[name])
    if cfg.random_baseline:
        metrics[RANDOM] = chance_accuracy(cfg.output)
        atomic_write_json(Path(cfg.metrics_dir) / f"{RANDOM}.json", metrics[RANDOM])
    write_report(cfg, metrics, params.profile)
    return metrics


def write_report(cfg: EvalConfig, metrics: dict[str, dict[str, float]], profile: str) -> list[str]:
    """The table (`cfg.table`), its cells as DVC metrics (`<metrics_dir>/table.json`) and the loss figure."""
    atomic_write_text(cfg.table, render_table(cfg, metrics, profile))
    atomic_write_json(Path(cfg.metrics_dir) / f"{TABLE_METRICS}.json", table_cells(cfg, metrics))
    return draw_loss_figure(cfg)


def read_metrics(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """The metrics files of the configured models (and of the chance baseline) that exist."""
    out = {}
    for name in [*cfg.models, RANDOM]:
        p = Path(cfg.metrics_dir) / f"{name}.json"
        if p.is_file():
            out[name] = json.loads(p.read_text())
    return out


def read_loss_tsv(path: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) from a DVC plots TSV: the `step` column and `loss` (else the last column)."""
    import csv

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return [], []
    cols = list(rows[0])
    ycol = "loss" if "loss" in cols else cols[-1]
    xcol = "step" if "step" in cols else cols[0]
    return [float(r[xcol]) for r in rows], [float(r[ycol]) for r in rows]


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard-style smoothing, as the seed's figure).

    The default weight spans about a tenth of the curve (0.9 at most), so a short demo curve is not
    dragged behind its points."""
    if weight is None:
        weight = min(0.9, max(0.0, 1 - 10 / max(len(values), 1)))
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def draw_loss_figure(cfg: EvalConfig) -> list[str]:
    """Draw `cfg.figure`: one panel per training stage with data (raw + smoothed loss); return the stages drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for stage, tsv in cfg.loss_plots.items():
        if Path(tsv).is_file():
            steps, loss = read_loss_tsv(Path(tsv))
            if steps:
                curves[stage] = (steps, loss)
    if not curves:  # still a figure: the stage's output exists, and says what is missing
        fig, ax = plt.subplots(figsize=(5.05, 3.45))
        ax.text(0.5, 0.5, "no loss data in\n" + "\n".join(cfg.loss_plots.values()), ha="center", va="center")
        ax.set_axis_off()
        Path(cfg.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(cfg.figure, dpi=120)
        plt.close(fig)
        return []
    fig, axes = plt.subplots(1, len(curves), figsize=(5.05 * len(curves), 3.45), squeeze=False)
    for ax, (stage, (steps, loss)) in zip(axes[0], curves.items()):
        ax.plot(steps, loss, alpha=0.25, color="tab:blue", label="raw")
        ax.plot(steps, smooth(loss), color="tab:blue", label="smoothed")
        ax.set(title=f"{stage} training loss", xlabel="step", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(cfg.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(cfg.figure, dpi=120)
    plt.close(fig)
    return list(curves)


def report(params: Params) -> dict[str, Any]:
    """Re-render the table (and its cells) from the metrics files and draw the loss figure from the plots TSVs."""
    cfg = params.eval
    metrics = read_metrics(cfg)
    if not metrics:
        raise UserError(f"no metrics under {cfg.metrics_dir}: run `biomed-llama evaluate` first")
    t0 = time.perf_counter()
    stages = write_report(cfg, metrics, params.profile)
    return {"table": cfg.table, "figure": cfg.figure if stages else None, "stages": stages,
            "figure_s": time.perf_counter() - t0}
