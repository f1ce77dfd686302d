"""`biomed-llama compose`: a base profile plus overlays into one params file (DESIGN contract 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import app


@app.command()
def compose(
    layers: Annotated[
        list[Path],
        typer.Argument(
            help="The base profile, then overlays in order, e.g. configs/paper.yaml configs/overlays/gpu-smoke.yaml."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The composed params file (DVC reads params.yaml).")] = Path(
        "params.yaml"
    ),
) -> None:
    """Merge the layers in order, validate the result and write it with a header naming its sources."""
    from biomed_llama.profiles import write_composed

    params = write_composed(layers, out)
    typer.echo(f"wrote {out}: profile {params.profile} from {' + '.join(str(p) for p in layers)}")
