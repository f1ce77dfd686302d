"""The Typer app and the options every stage command shares (`--params`, `--set`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.config import Params, load_params
from biomed_llama.errors import ConfigError
from biomed_llama.fsutil import STAGE_OF_COMMAND, check_stage_outputs

app = typer.Typer(
    name="biomed-llama",
    help="Reproduce BioMed-LLaMA: extract, tokenize, pretrain, instruct-mix, finetune, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Params YAML (default params.yaml).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a param: KEY=VALUE, e.g. pretrain.optim.lr=3e-5.")
]


def load(params: Path, overrides: list[str] | None, stage: str | None = None) -> Params:
    """Load and validate params for a command (a ConfigError becomes exit code 2 in `main`).

    `stage`: the pipeline stage the command runs; its outputs are checked before anything is touched
    (`fsutil.check_stage_outputs`: an output may never overwrite an input, another stage's data, the
    checkout or git-tracked files).
    """
    cfg = load_params(params, overrides or [])
    if stage in STAGE_OF_COMMAND:
        try:  # the params file's own values: a git-tracked metrics file it names may be rewritten
            sanctioned = load_params(params, []) if overrides else cfg
        except ConfigError:
            sanctioned = None
        check_stage_outputs(cfg, STAGE_OF_COMMAND[stage], sanctioned)
    return cfg
