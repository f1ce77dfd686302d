"""Evaluation commands: prepare-eval, evaluate, report (registered on the shared app)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command("prepare-eval")
def prepare_eval(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Convert the benchmark files into task JSON-lines and render the lm-eval task folders."""
    cfg = load(params, set_, "prepare-eval")
    from biomed_llama.eval.prepare import prepare_eval as run

    counts = run(cfg.eval, cfg.readers)
    typer.echo(f"prepare-eval: {cfg.eval.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Run the configured models × suites × shots through lm-eval; write metrics/eval/*.json and the table."""
    # lm-eval imports the rendered task folders' utils.py: no bytecode cache may appear inside the
    # verified data/eval (a file added there fails `verify`, and a planted .pyc would be code).
    sys.dont_write_bytecode = True
    cfg = load(params, set_, "evaluate")
    from biomed_llama.eval.run import evaluate as run

    run(cfg.eval, cfg.profile)
    typer.echo(Path(cfg.eval.table).read_text())


@app.command()
def report(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Re-render the results table and the training-loss figure from metrics and plots data."""
    cfg = load(params, set_)
    from biomed_llama.eval.run import report as run

    out = run(cfg.eval, cfg.profile)
    typer.echo(Path(out["table"]).read_text())
    typer.echo(f"figure: {out['figure'] or 'no loss data under ' + ', '.join(cfg.eval.loss_plots.values())}")
