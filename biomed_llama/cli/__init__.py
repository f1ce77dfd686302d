"""The `biomed-llama` command: one sub-command per pipeline stage, each a thin call into the library.

Commands live in one module per concern (data, train, instruct, evaluate, env); importing them
registers them on the shared Typer app.
"""

from __future__ import annotations

import sys

from biomed_llama.errors import UserError
from biomed_llama.cli.common import app
from biomed_llama.cli import data, env, evaluate, instruct, launch, show, train  # noqa: F401  (registers commands)


def main() -> None:
    """Run the CLI; a UserError prints one line `error: …` and exits with its code, no traceback."""
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
