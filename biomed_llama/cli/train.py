"""train commands (registered on the shared app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command()
def pretrain(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Continue pretraining a LLaMA on the token stream (run under torchrun: one process per GPU).

    Resumes from the newest checkpoint in its run folder under pretrain.checkpoint_dir; SIGTERM/SIGUSR1 save one and exit.
    """
    cfg = load(params, set_)
    from biomed_llama.train.pretrain import run_pretrain

    run_pretrain(cfg)


@app.command()
def finetune(
    mode: Annotated[str, typer.Option("--mode", help="instruct: the instruction mixture; task: one benchmark's train set.")],
    task: Annotated[Optional[str], typer.Option("--task", help="Task mode: a finetune.tasks name (medqa, medmcqa, pubmedqa).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Fine-tune finetune.model with the pretrain engine (run under torchrun: one process per GPU).

    Loss on output + EOS tokens only; exports models/instruct or models/ft-<task>. Resumes like pretrain.
    """
    cfg = load(params, set_)
    from biomed_llama.train.finetune import run_finetune

    run_finetune(cfg, mode, task)  # type: ignore[arg-type]
