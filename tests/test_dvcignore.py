"""DVC ignores Python bytecode caches: importing the rendered lm-eval task folders (a dependency of
`evaluate`) writes them when PYTHONDONTWRITEBYTECODE is unset, and must not rerun `evaluate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DVC = Path(sys.executable).with_name("dvc")


def test_pycache_in_a_stage_folder_is_ignored(repo_root: Path):
    ignored = subprocess.run([str(DVC), "check-ignore", "data/eval/tasks/seed/__pycache__/utils.cpython-311.pyc"],
                             cwd=repo_root, capture_output=True, text=True)
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr
    kept = subprocess.run([str(DVC), "check-ignore", "data/eval/tasks/seed/utils.py"], cwd=repo_root,
                          capture_output=True, text=True)
    assert kept.returncode == 1, kept.stdout + kept.stderr
