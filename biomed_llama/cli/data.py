"""Data commands: extract (+ merge), tokenize, verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command()
def extract(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: extract.workers).")] = None,
    num_shards: Annotated[int, typer.Option(help="Split the input files over this many jobs (Slurm array).")] = 1,
    shard_index: Annotated[int, typer.Option(help="Which of the --num-shards jobs this is (0-based).")] = 0,
) -> None:
    """Keep the PubMed records of Pile shards and write Parquet shards per subset and split."""
    cfg = load(params, set_, "extract")
    from biomed_llama.data.extract import run_extract

    run_extract(cfg.extract, workers=workers, num_shards=num_shards, shard_index=shard_index)


@app.command("extract-merge")
def extract_merge(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    num_shards: Annotated[int, typer.Option(help="How many partial extract jobs to merge.")] = 1,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: extract.workers).")] = None,
) -> None:
    """Merge the partial outputs of `extract --num-shards N --shard-index i` into the final output."""
    cfg = load(params, set_, "extract-merge")
    from biomed_llama.data.extract import merge_extract

    merge_extract(cfg.extract, num_shards=num_shards, workers=workers)


@app.command()
def tokenize(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: tokenize.workers).")] = None,
) -> None:
    """Tokenize the extracted shards into a flat token array and document index per subset/split."""
    cfg = load(params, set_, "tokenize")
    from biomed_llama.data.tokenize import run_tokenize

    run_tokenize(cfg.tokenize, workers=workers)


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="An output folder with a manifest.json.")],
    inputs: Annotated[
        bool,
        typer.Option(
            "--inputs",
            help="Also check the inputs the manifest recorded against those paths now (run from the checkout).",
        ),
    ] = False,
) -> None:
    """Check every file of PATH against its manifest (and, with --inputs, its recorded inputs); exit 3 naming the first mismatch."""
    from biomed_llama.provenance import require_current_inputs, require_verified

    require_verified(path)
    if not inputs:
        typer.echo(f"ok: {path} matches its manifest")
        return
    n = require_current_inputs(path)
    typer.echo(f"ok: {path} matches its manifest, and its {n} recorded inputs are unchanged")
