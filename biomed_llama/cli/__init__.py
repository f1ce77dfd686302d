"""The `biomed-llama` command: one sub-command per pipeline stage, each a thin call into the library.

Commands live in one module per concern (data, train, instruct, evaluate, env); importing them
registers them on the shared Typer app.
"""

from __future__ import annotations

import sys

from biomed_llama.cli import contamination, data, env, evaluate, instruct, launch, profile, show, train  # noqa: F401  (registers commands)
from biomed_llama.cli.common import app
from biomed_llama.errors import UserError, output_error, report
from biomed_llama.procs import die_with_torchrun_agent


def main() -> None:
    """Run the CLI; a UserError prints one line `error: …` and exits with its code, no traceback.

    So does a full or read-only disk met outside the writers that name their output (exit code 1).
    A torchrun worker first ties its life to the agent's (`procs`) and leaves its error line to the
    local launcher (`errors.report`).
    """
    die_with_torchrun_agent()
    try:
        app()
    except UserError as e:
        sys.exit(report(str(e), e.exit_code))
    except OSError as e:
        err = output_error(e)
        if err is None:
            raise
        sys.exit(report(str(err), err.exit_code))
