"""train commands (registered on the shared app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command()
def pretrain(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Continue pretraining a LLaMA on the token stream (run under torchrun: one process per GPU).

    Resumes from the newest checkpoint in its run folder under pretrain.checkpoint_dir; SIGTERM/SIGUSR1 save one and exit.
    """
    cfg = load(params, set_, "pretrain")
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    run_pretrain(PretrainParams.of(cfg))


@app.command()
def finetune(
    mode: Annotated[
        str, typer.Option("--mode", help="instruct: the instruction mixture; task: one benchmark's train set.")
    ],
    task: Annotated[
        str | None, typer.Option("--task", help="Task mode: a finetune.tasks name (medqa, medmcqa, pubmedqa).")
    ] = None,
    # Not `--start`: torchrun's parser would take it for an abbreviation of its own --start-method.
    base: Annotated[
        bool, typer.Option("--base", help="Fine-tune finetune.base (the LLaMA-7B rows) instead of finetune.model.")
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Fine-tune a start model with the pretrain engine (run under torchrun: one process per GPU).

    Loss on output + EOS tokens only; exports models/instruct or models/ft-<task> (one model per seed of
    finetune.tasks.<task>.seeds); `--base` writes finetune.base's folders. Resumes like pretrain.
    """
    from biomed_llama.train.finetune import FinetuneParams, run_finetune, run_task_seeds

    cfg = FinetuneParams.of(load(params, set_, "finetune"))

    start = "base" if base else "pretrained"
    if mode == "task" and task is not None:
        run_task_seeds(cfg, task, start)  # type: ignore[arg-type]
    else:
        run_finetune(cfg, mode, task, start)  # type: ignore[arg-type]
