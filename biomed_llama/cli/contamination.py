"""Contamination commands: contamination (+ merge)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command()
def contamination(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: contamination.workers).")] = None,
    num_shards: Annotated[int, typer.Option(help="Split the extracted files over this many jobs (Slurm array).")] = 1,
    shard_index: Annotated[int, typer.Option(help="Which of the --num-shards jobs this is (0-based).")] = 0,
) -> None:
    """Find the benchmark test items whose 13-grams occur in the extracted pretraining documents."""
    cfg = load(params, set_, "contamination")
    from biomed_llama.contamination.stage import run_contamination

    run_contamination(
        cfg.contamination,
        cfg.eval.benchmarks,
        cfg.readers,
        workers=workers,
        num_shards=num_shards,
        shard_index=shard_index,
    )


@app.command("contamination-merge")
def contamination_merge(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    num_shards: Annotated[int, typer.Option(help="How many partial contamination jobs to merge.")] = 1,
) -> None:
    """Merge the partial outputs of `contamination --num-shards N --shard-index i` into the final output."""
    cfg = load(params, set_, "contamination-merge")
    from biomed_llama.contamination.stage import merge_contamination

    merge_contamination(cfg.contamination, cfg.eval.benchmarks, cfg.readers, num_shards=num_shards)
