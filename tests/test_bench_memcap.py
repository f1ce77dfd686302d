"""bench/memcap: the one GPU memory cap of the bench runs, and its sitecustomize entry for the CLI's workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import memcap
from tests.helpers import REPO


def test_the_cap_is_the_share_of_the_card():
    card = 141 * 2**30  # an H200's memory: an 80 GiB cap is 80/141 of it
    assert memcap.cap_fraction(80, card) == pytest.approx(80 / 141)
    assert memcap.cap_fraction(200, card) == 1.0  # a cap above the card caps nothing


def test_a_cap_is_set_on_the_workers_gpu(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: type("P", (), {"total_memory": 160 * 2**30}))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    monkeypatch.delenv(memcap.ENV, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    memcap.cap_from_env()
    assert calls == []  # no cap asked for
    monkeypatch.setenv(memcap.ENV, "80")
    memcap.cap_from_env()
    assert calls == [(0.5, 3)]


def test_sitecustomize_loads_the_helper_in_a_worker():
    """As bench/lib.sh `capped` runs a worker: the helper imports at start (a failing sitecustomize would only
    print a line and leave the run uncapped)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'bench' / 'memcap'}:{REPO}", memcap.ENV: "80", "LOCAL_RANK": "0"}
    done = subprocess.run([sys.executable, "-c", "import sys; print('bench.memcap' in sys.modules)"], cwd="/",
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.strip() == "True", done.stderr
