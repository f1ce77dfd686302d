"""The `evaluate` and `report` stages: models (and their seed runs) × suites × shots through lm-eval, metrics,
the chance baseline, the table with its cells, the loss figure."""

from __future__ import annotations

import csv
import json
import time
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

from biomed_llama.contamination.results import contaminated_items
from biomed_llama.errors import UserError
from biomed_llama.eval import harness
from biomed_llama.eval.aggregate import chance_accuracy, combine_members, model_members
from biomed_llama.eval.config import EvalConfig, EvalModel
from biomed_llama.eval.members import Checked, Evaluation, evaluate_member, member_dir
from biomed_llama.eval.table import RANDOM, render_table, table_cells
from biomed_llama.fsutil import atomic_write_json, atomic_write_text
from biomed_llama.provenance import require_verified, trusted_model, write_manifest
from biomed_llama.stage_metrics import write_split

# Lazy imports: torch, matplotlib and rich are imported where they are used: the report and planning paths start
# without them.


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    )


def _check_model(name: str, m: EvalModel) -> tuple[list[tuple[str, Path]], dict[str, Any]]:
    """The model's members (itself, or its seed runs), each a HF folder that is trusted (`trusted_model`: its
    manifest verifies, or `external` says it was made elsewhere); and their records for the eval manifest."""
    assert m.path is not None, "only models with a path are checked"
    members = model_members(name, m.path)
    described: dict[str, Any] = {}
    for _, folder in members:
        described.update(trusted_model(folder, external=m.external, opt_in=f"eval.models.{name}.external"))
    return members, described


def evaluate(cfg: EvalConfig, profile: str) -> dict[str, dict[str, float]]:
    """Run every configured (model, suite, task, shots) of the models with a path (each seed of a seed-run folder);
    write metrics (and chance accuracy), full results, the table, its cells and the loss figure. Return metrics.

    Every model is checked before any is loaded. With `eval.workers` > 1 the (model member, suite) units run in that
    many worker processes (eval/units.py), with the same numbers and outputs. What was measured is kept when a run
    fails: each model's metrics file holds the runs it finished, and the table shows them; the first error is raised.
    """
    require_verified(cfg.output)
    verdicts = contaminated_items(cfg.contamination)  # None: no contamination output, full-set cells only
    checked: Checked = {name: _check_model(name, m) for name, m in cfg.models.items() if m.path}
    measured = cfg.model_copy(update={"models": {n: m for n, m in cfg.models.items() if m.path}})
    pending: dict[str, dict[str, dict[str, float]]] = {}  # model → member → metrics of the runs finished so far
    recorded = cfg.model_dump(mode="json", exclude={"models", "progress"})
    metrics: dict[str, dict[str, float]] = {}
    if cfg.random_baseline:
        metrics[RANDOM] = chance_accuracy(cfg.output, verdicts)

    def finish(name: str) -> None:
        """Every run of model `name` is done: its metrics (mean ± std over seed members) and its manifest."""
        metrics[name] = combine_members(pending.pop(name))
        atomic_write_json(Path(cfg.metrics_dir) / f"{name}.json", metrics[name])
        inputs = [cfg.output] + ([cfg.contamination] if verdicts is not None and cfg.contamination else [])
        write_manifest(
            Path(cfg.results_dir) / name,
            stage="evaluate",
            inputs=inputs,
            described=checked[name][1],
            params={"model": name, **cfg.models[name].model_dump(mode="json"), "eval": recorded},
        )

    ev = Evaluation(cfg, checked, harness.plan_runs(measured), verdicts, pending, finish)
    try:
        if cfg.workers > 1:
            from biomed_llama.eval.units import evaluate_units

            evaluate_units(ev)
        else:
            _evaluate_serially(ev)
    except BaseException:
        for name, per_member in pending.items():  # the runs the failing model finished are kept too
            done = {label: m for label, m in per_member.items() if m}
            if done:
                metrics[name] = combine_members(done)
        with suppress(Exception):  # the first error is the one to report; keep what was measured
            _keep(cfg, metrics, profile)
        raise
    _keep(cfg, metrics, profile)
    return metrics


def _evaluate_serially(ev: Evaluation) -> None:
    """Every model member in this process, one after the other, under one progress bar; `ev.finish(name)` after
    each model, whose members' metrics fill `ev.pending[name]` as its runs finish."""
    cfg = ev.cfg
    tm = harness.task_manager(Path(cfg.output) / "tasks")
    with _progress(cfg.progress) as prog:
        total = sum(len([r for r in ev.runs if r.model == n]) * len(ms) for n, (ms, _) in ev.checked.items())
        bar = prog.add_task("evaluate", total=total) if prog else None
        for name, (ms, _) in ev.checked.items():
            mine = [r for r in ev.runs if r.model == name]
            per_member = ev.pending[name] = {}
            for label, folder in ms:
                if prog:
                    prog.update(bar, description=f"{name}: loading {folder}")
                out_dir, timing = member_dir(cfg, name, label), dict[str, float]()
                per_member[label] = {}
                evaluate_member(cfg, tm, mine, folder, out_dir, per_member[label], timing, prog, bar, ev.verdicts)
                atomic_write_json(out_dir / "timing.json", timing)
            ev.finish(name)


def _keep(cfg: EvalConfig, metrics: dict[str, dict[str, float]], profile: str) -> None:
    """Write each model's metrics file (the runs it finished), the chance baseline's, and the report of them."""
    for name, values in metrics.items():
        if values:
            atomic_write_json(Path(cfg.metrics_dir) / f"{name}.json", values)
    write_report(cfg, metrics, profile)


def write_report(cfg: EvalConfig, metrics: dict[str, dict[str, float]], profile: str) -> list[str]:
    """The table (`cfg.table`), its cells as DVC metrics (`cfg.table_metrics`) and the loss figure."""
    atomic_write_text(cfg.table, render_table(cfg, metrics, profile))
    details: dict[str, float] = {}  # the clean counts, the generation cells' clean values: beside the headline
    write_split(cfg.table_metrics, table_cells(cfg, metrics, details), details)
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
        out.append(avg / (1 - weight**i))
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
    for ax, (stage, (steps, loss)) in zip(axes[0], curves.items(), strict=True):
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


def report(cfg: EvalConfig, profile: str) -> dict[str, Any]:
    """Re-render the table (and its cells) from the metrics files and draw the loss figure from the plots TSVs."""
    metrics = read_metrics(cfg)
    if not metrics:
        raise UserError(f"no metrics under {cfg.metrics_dir}: run `biomed-llama evaluate` first")
    t0 = time.perf_counter()
    stages = write_report(cfg, metrics, profile)
    return {
        "table": cfg.table,
        "figure": cfg.figure if stages else None,
        "stages": stages,
        "figure_s": time.perf_counter() - t0,
    }
