"""Environment commands: `env` prints the fingerprint, `env check` compares it with the lock."""

from __future__ import annotations

import json

import typer

from biomed_llama.cli.common import app

env_app = typer.Typer(help="Print or check the environment fingerprint.", invoke_without_command=True,
                      no_args_is_help=False)
app.add_typer(env_app, name="env")


@env_app.callback()
def env(ctx: typer.Context) -> None:
    """Print the environment fingerprint stored in every manifest (JSON)."""
    if ctx.invoked_subcommand is None:
        from biomed_llama.provenance import fingerprint

        typer.echo(json.dumps(fingerprint(), indent=2, sort_keys=True))
