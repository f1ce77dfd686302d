"""train commands (registered on the shared app)."""

from __future__ import annotations

from pathlib import Path

from biomed_llama.cli.common import ParamsOpt, SetOpt, app, load


@app.command()
def pretrain(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Continue pretraining a LLaMA on the token stream (run under torchrun: one process per GPU).

    Resumes from the newest checkpoint in pretrain.checkpoint_dir; SIGTERM/SIGUSR1 save one and exit.
    """
    cfg = load(params, set_)
    from biomed_llama.train.pretrain import run_pretrain

    run_pretrain(cfg)
