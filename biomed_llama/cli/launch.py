"""launch commands: run a stage here (torchrun for training), on Slurm, or inside the image (registered on the shared app)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch(
    ctx: typer.Context,
    stage: Annotated[
        str,
        typer.Argument(
            help="Stage: extract, tokenize, pretrain, instruct-mix, finetune, prepare-eval, contamination or evaluate."
        ),
    ],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the command (and its BIOMED_* variables), run nothing.")
    ] = False,
) -> None:
    """Run STAGE as `launch:` says: here (torchrun for training) or on Slurm, inside `launch.container`'s image if set.

    Further arguments go to the stage command unchanged, e.g. `launch finetune --mode task --task medqa`.
    """
    from biomed_llama.launch.commands import build
    from biomed_llama.launch.commands import launch as run

    cfg = load(params, set_, stage).launch  # a stage's unsafe output is refused here, before it starts
    if dry_run:
        cmd = build(cfg, stage, params, set_ or [], ctx.args)
        for k, v in sorted(cmd.env.items()):
            typer.echo(f"{k}={shlex.quote(v)}")
        typer.echo(shlex.join(cmd.argv))
        return
    raise typer.Exit(run(cfg, stage, params, set_ or [], ctx.args))
