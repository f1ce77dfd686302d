"""Environment commands: `env` prints the fingerprint, `env check` compares it with the lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import app
from biomed_llama.errors import UserError
from biomed_llama.fsutil import atomic_write_json

env_app = typer.Typer(
    help="Print or check the environment fingerprint.", invoke_without_command=True, no_args_is_help=False
)
app.add_typer(env_app, name="env")


@env_app.callback()
def env(ctx: typer.Context) -> None:
    """Print the environment fingerprint stored in every manifest (JSON)."""
    if ctx.invoked_subcommand is None:
        from biomed_llama.provenance import fingerprint

        typer.echo(json.dumps(fingerprint(), indent=2, sort_keys=True))


@env_app.command("check")
def env_check(
    lock: Annotated[
        Path | None, typer.Option(help="Lock to compare with (default: BIOMED_LOCK or requirements/cpu.lock).")
    ] = None,
    allow_extra: Annotated[
        bool, typer.Option("--allow-extra", help="Do not count installed packages that the lock lacks.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON report (with the image identity) here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of a summary.")] = False,
) -> None:
    """Compare installed packages with the lock; exit 1 naming each drifted package."""
    from biomed_llama.env_check import check

    report = check(lock, allow_extra=allow_extra)
    if out:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    image = report["container"]
    if image:
        labels = image.get("labels") or {}
        typer.echo(
            f"image: {image.get('image')} ({image.get('runtime') or 'runtime unknown'}) "
            f"sha256={image.get('sha256', 'n/a')} base={labels.get('biomed.base.sha256', 'n/a')}",
            err=True,
        )
    for line in report["problems"]:
        typer.echo(f"drift: {line}", err=True)
    if not report["ok"]:
        names = ", ".join(d["name"] for d in report["drift"]) or "lock file"
        raise UserError(f"environment differs from {report['lock']} ({len(report['problems'])}): {names}")
    if not as_json:
        typer.echo(f"ok: installed packages match {report['lock']} (sha256 {report['lock_sha256'][:12]}…)")
