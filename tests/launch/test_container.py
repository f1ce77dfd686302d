"""`container_prefix`: the argv prefix that runs the job's command inside `launch.image` (or nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomed_llama.errors import ConfigError
from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.container import container_prefix


def test_none_is_empty():
    assert container_prefix(LaunchConfig(), workdir=Path("/ck"), gpu=True) == []


def test_apptainer_binds_the_checkout_and_adds_nv_only_for_gpus():
    cfg = LaunchConfig(container="apptainer", image="/img/b.sif", binds=["/data:/ck/data:ro"])
    assert container_prefix(cfg, workdir=Path("/ck"), gpu=False) == [
        "apptainer", "exec", "--bind", "/ck", "--bind", "/data:/ck/data:ro", "--pwd", "/ck", "/img/b.sif"]
    assert container_prefix(cfg, workdir=Path("/ck"), gpu=True)[:3] == ["apptainer", "exec", "--nv"]


def test_podman_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="launch.container=podman"):
        container_prefix(LaunchConfig(container="podman"), workdir=Path("/ck"), gpu=False)
