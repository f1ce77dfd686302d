"""`biomed-llama env` / `env check`: the fingerprint, and drift against the lock."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biomed_llama.env_check import Drift, check, compare, read_lock, versions_match
from biomed_llama.errors import UserError
from biomed_llama.fsutil import sha256_file


def test_read_lock_pins_hashes_and_markers(tmp_path: Path):
    lock = tmp_path / "x.lock"
    lock.write_text("# header\nFoo_Bar==1.2 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\n"
                    "baz==2.0 ; sys_platform == 'never'\nqux==3.0+cpu\n")
    assert read_lock(lock) == {"foo-bar": "1.2", "qux": "3.0+cpu"}
    with pytest.raises(UserError, match="not found"):
        read_lock(tmp_path / "missing.lock")


def test_versions_match_pep440():
    assert versions_match("2.13.0", "2.13.0+cpu")  # the CPU build satisfies a plain pin
    assert not versions_match("2.13.0+cu130", "2.13.0+cpu")
    assert versions_match("1.0", "1.0.0") and not versions_match("1.0", "1.0.1")


def test_compare_names_every_drift():
    drift = compare({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "2.1", "d": "4", "pip": "25"})
    assert [str(d) for d in drift] == ["b: locked 2, installed 2.1", "c: locked 3, not installed",
                                       "d: installed 4, not in the lock"]
    assert compare({"a": "1"}, {"a": "1", "d": "4"}, allow_extra=True) == []
    assert Drift("x", "1", None) in compare({"x": "1"}, {})


def test_check_reports_image_lock_hash_mismatch(tmp_path: Path, monkeypatch):
    from biomed_llama.provenance import packages

    lock = tmp_path / "l.lock"
    lock.write_text("".join(f"{n}=={v}\n" for n, v in packages().items()))
    monkeypatch.setenv("BIOMED_IMAGE", "biomed-llama:test")
    monkeypatch.setenv("BIOMED_LOCK_SHA256", sha256_file(lock))
    report = check(lock)
    assert report["ok"] and report["container"]["image"] == "biomed-llama:test"
    monkeypatch.setenv("BIOMED_LOCK_SHA256", "0" * 64)
    report = check(lock)
    assert not report["ok"] and "differs from the image's recorded" in report["problems"][0]


def _cli(python: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "biomed_llama", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_env_prints_fingerprint(repo_root: Path):
    proc = _cli(Path(sys.executable), "env")
    assert proc.returncode == 0, proc.stderr
    fp = json.loads(proc.stdout)
    assert fp["lock"]["path"] == "requirements/cpu.lock" and fp["packages"]["pydantic"]


def test_env_check_names_a_drifted_package(tmp_path: Path):
    """This environment against a copy of its lock with one pin changed: exit 1, the package named."""
    lock = tmp_path / "cpu.lock"
    from biomed_llama.provenance import packages

    pins = {n: v for n, v in packages().items() if n not in ("biomed-llama", "pip")}
    pins["rich"] = "0.0.1"
    lock.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
    proc = _cli(Path(sys.executable), "env", "check", "--lock", str(lock))
    assert proc.returncode == 1
    assert "drift: rich: locked 0.0.1, installed" in proc.stderr
    assert re.search(r"^error: environment differs from .*: rich$", proc.stderr, re.M)


def _wheelhouse(repo_root: Path) -> Path:
    """The files of every cpu.lock pin but torch, kept per lock hash under ~/.cache (first run: PyPI).

    pip's own HTTP cache is not kept on these machines, so without this each run would download
    the whole lock again; with it the fresh install reads local files only (`--no-index`).
    `pip download` keeps the published files (an sdist stays an sdist): the lock's hashes are of
    those, so a wheel built here from an sdist would fail `--require-hashes`.
    """
    lock = repo_root / "requirements/cpu.lock"
    house = Path.home() / ".cache" / "biomed-llama" / f"wheelhouse-{sha256_file(lock)[:16]}"
    if not (house / ".complete").is_file():
        reqs = house.with_suffix(".txt")
        house.mkdir(parents=True, exist_ok=True)
        # `wheel`: what pip's isolated build of an sdist without pyproject.toml needs beside the
        # locked setuptools (pip adds it to such builds), for the offline install below.
        reqs.write_text("".join(f"{n}=={v}\n" for n, v in read_lock(lock).items() if n != "torch") + "wheel\n")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(house),
                               "-r", str(reqs)], capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
        (house / ".complete").touch()
    return house


@pytest.mark.slow
@pytest.mark.integration
def test_fresh_venv_from_cpu_lock_passes_env_check(repo_root: Path, tmp_path: Path):
    """`make install` (the commands `make demo` runs) into a fresh venv, then `env check` there.

    Then one installed distribution's version is changed and `env check` must fail naming it.
    """
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    venv = tmp_path / "venv"
    # Same recipe; pip reads its wheels from the local wheelhouse (and the CPU torch from the
    # machine's find-links), and skips writing .pyc files (half of its CPU time here).
    links = " ".join(filter(None, [os.environ.get("PIP_FIND_LINKS", ""), str(_wheelhouse(repo_root))]))
    pip_env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": links, "PIP_NO_COMPILE": "1"}
    proc = subprocess.run(["make", "-C", str(repo_root), "install", f"VENV={venv}"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **pip_env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    py = venv / "bin" / "python"
    env = {"PYTHONPATH": "", "BIOMED_LOCK": str(repo_root / "requirements/cpu.lock")}
    ok = subprocess.run([str(venv / "bin" / "biomed-llama"), "env", "check"], capture_output=True, text=True,
                        cwd=repo_root, env={**os.environ, **env}, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: installed packages match")
    # Change the installed version of one package (as a stray `pip install colorama==…` would).
    meta = next((venv / "lib").glob("python*/site-packages/colorama-*.dist-info/METADATA"))
    meta.write_text(re.sub(r"^Version: .*$", "Version: 0.0.1", meta.read_text(), count=1, flags=re.M))
    bad = _cli(py, "env", "check", env=env)
    assert bad.returncode == 1
    assert re.search(r"^drift: colorama: locked [\d.]+, installed 0.0.1$", bad.stderr, re.M), bad.stderr


def test_packages_reports_the_distribution_import_would_load(tmp_path: Path, monkeypatch):
    """A name installed twice (PYTHONPATH over site-packages, as on the GPU machine): the first wins."""
    from biomed_llama import provenance

    for folder, version in (("first", "2.0"), ("second", "1.0")):
        info = tmp_path / folder / f"biomed_fake_pkg-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: biomed-fake-pkg\nVersion: {version}\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "first"), str(tmp_path / "second"), *sys.path])
    provenance.packages.cache_clear()
    try:
        assert provenance.packages()["biomed-fake-pkg"] == "2.0"
    finally:
        provenance.packages.cache_clear()
