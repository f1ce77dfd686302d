"""The local launcher's error folder: a launcher killed with -9 leaves one, the next launcher removes it."""

from __future__ import annotations

import os
import subprocess
import sys

from biomed_llama.launch.local import ERROR_DIR_PREFIX, clean_stale_error_dirs


def test_folders_of_dead_launchers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"{ERROR_DIR_PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{ERROR_DIR_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{ERROR_DIR_PREFIX}xyz"  # not named by a pid: not ours to judge
    for p in (gone, live, other):
        p.mkdir()
    assert clean_stale_error_dirs(tmp_path) == [gone]
    assert not gone.exists() and live.is_dir() and other.is_dir()
