"""The two locks: generated from pyproject.toml, every dependency pinned in both, shared pins equal."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from biomed_llama.env_check import read_lock
from biomed_llama.provenance import normalise

CUDA_ONLY = re.compile(r"^(nvidia-(?!ml-py).*|triton|cuda-.*)$")


@pytest.fixture(scope="module")
def project(repo_root: Path) -> dict:
    return tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def cpu(repo_root: Path) -> dict[str, str]:
    return read_lock(repo_root / "requirements/cpu.lock")


@pytest.fixture(scope="module")
def cuda(repo_root: Path) -> dict[str, str]:
    return read_lock(repo_root / "requirements/cuda.lock")


def _names(reqs: list[str]) -> list[Requirement]:
    return [Requirement(r) for r in reqs]


def _assert_pinned(reqs: list[Requirement], lock: dict[str, str], which: str) -> None:
    missing = [str(r) for r in reqs if normalise(r.name) not in lock]
    assert not missing, f"{which} lacks {missing}; run `make lock`"
    # The locked version must satisfy pyproject's range (a stale lock after a range change fails).
    outside = [f"{r} (locked {lock[normalise(r.name)]})" for r in reqs
               if not r.specifier.contains(lock[normalise(r.name)], prereleases=True)]
    assert not outside, f"{which} pins outside pyproject.toml's ranges: {outside}; run `make lock`"


def test_every_dependency_is_pinned_in_both(project, cpu, cuda):
    direct = _names(project["dependencies"]) + _names(project["optional-dependencies"]["test"])
    _assert_pinned(direct, cpu, "cpu.lock")
    _assert_pinned(direct, cuda, "cuda.lock")
    _assert_pinned(_names(project["optional-dependencies"]["gpu"]), cuda, "cuda.lock")


def test_locks_agree_on_shared_packages(project, cpu, cuda):
    differ = {n: (cpu[n], cuda[n]) for n in cpu.keys() & cuda.keys() if cpu[n] != cuda[n]}
    assert not differ, f"cpu.lock and cuda.lock disagree (cpu, cuda): {differ}"
    # Everything the CPU setup runs is in the image too; the image adds only the CUDA runtime.
    assert not cpu.keys() - cuda.keys(), f"only in cpu.lock: {sorted(cpu.keys() - cuda.keys())}"
    gpu_extra = {normalise(r.name) for r in _names(project["optional-dependencies"]["gpu"])}
    extra = sorted(n for n in cuda.keys() - cpu.keys() if not CUDA_ONLY.match(n) and n not in gpu_extra)
    assert not extra, f"image-only pins that are neither CUDA runtime nor the gpu extra: {extra}"


def test_cuda_lock_is_hash_checked_cuda_build(repo_root: Path, cuda):
    text = (repo_root / "requirements/cuda.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    pins = [e for e in entries if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", e)]
    assert len(pins) == len(cuda)
    unhashed = [e.split()[0] for e in pins if "--hash=sha256:" not in e]
    assert not unhashed, f"pins without hashes (pip --require-hashes would refuse): {unhashed}"
    # PyPI's default linux torch is the CUDA build: its NCCL and cuDNN wheels are locked beside it.
    assert "+" not in cuda["torch"]
    assert any(n.startswith("nvidia-nccl") for n in cuda) and any(n.startswith("nvidia-cudnn") for n in cuda)


def test_cpu_lock_has_no_cuda_runtime(cpu):
    assert not [n for n in cpu if CUDA_ONLY.match(n)], "cpu.lock must not pull the CUDA runtime"


def test_make_lock_is_the_generator(repo_root: Path):
    makefile = (repo_root / "Makefile").read_text()
    recipe = re.search(r"^lock:\n((?:\t.*\n?)+)", makefile, re.M)
    assert recipe and "scripts/lock.py" in recipe.group(1)
    for name in ("cpu.lock", "cuda.lock"):
        head = (repo_root / "requirements" / name).read_text().splitlines()[:3]
        assert any("`make lock`" in line for line in head), f"{name} does not say how it was generated"


def test_bench_eval_wheels_are_cuda_lock_pins(repo_root: Path, cuda: dict[str, str]) -> None:
    """requirements/bench-eval-wheels.txt (what bench/bench_eval.py needs carried) pins cuda.lock's versions."""
    lines = [ln for ln in (repo_root / "requirements/bench-eval-wheels.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    pins = {normalise(n): v for n, v in (ln.split("==") for ln in lines)}
    assert {"transformers", "lm-eval", "tokenizers", "datasets"} <= set(pins)
    assert {n: v for n, v in pins.items() if cuda.get(n) != v} == {}


def test_e2e_wheels_are_cuda_lock_pins(repo_root: Path, cuda: dict[str, str]) -> None:
    """requirements/e2e-wheels.txt (what bench/e2e.sh's pipeline needs carried) pins cuda.lock's versions and
    carries DVC, zstandard, lm-eval and pydantic, never the GPU machine's torch stack."""
    lines = [ln.split("#")[0].strip() for ln in (repo_root / "requirements/e2e-wheels.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    pins = {normalise(n): v for n, v in (ln.split("==") for ln in lines)}
    assert {"dvc", "zstandard", "lm-eval", "pydantic", "datasets"} <= set(pins)
    assert not {"torch", "triton", "numpy", "pandas", "pyarrow"} & set(pins)
    assert {n: v for n, v in pins.items() if cuda.get(n) != v} == {}
