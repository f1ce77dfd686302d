"""instruct commands (registered on the shared app): `instruct-mix`."""

from __future__ import annotations

from pathlib import Path

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command("instruct-mix")
def instruct_mix(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Read the instruction sources, draw the weighted mixture with a seed, write it with a manifest."""
    cfg = load(params, set_, "instruct-mix")
    from biomed_llama.instruct.mixture import run_instruct_mix

    metrics = run_instruct_mix(cfg.instruct_mix, cfg.readers)
    typer.echo(
        f"instruct-mix: {metrics['n_records']} records from {len(metrics['sources'])} sources "
        f"({metrics['bad_records']} bad records skipped) -> {cfg.instruct_mix.output}"
    )
