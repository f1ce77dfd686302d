"""Environment fingerprint and per-folder manifests (sha256 + size of every file, inputs, params, env).

Every stage writes `manifest.json` into each output folder with `write_manifest` and checks its
input folders with `require_verified` before reading them; `biomed-llama verify PATH` runs `verify`.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.version import InvalidVersion, Version

from biomed_llama.errors import IntegrityError, UserError
from biomed_llama.fsutil import atomic_write_json, sha256_file
from biomed_llama.image_labels import LABELS_FILE

# Lazy imports: torch (seconds to import) is imported only where its versions are recorded: verifying a folder never
# loads it.

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Which lock describes this environment: the image sets BIOMED_LOCK to its CUDA lock.
DEFAULT_LOCK = Path("requirements/cpu.lock")
# Apptainer writes the %labels of the image here; the recipes bake the same labels into
# IMAGE_LABELS for OCI runtimes, whose labels a container cannot read.
APPTAINER_LABELS = Path("/.singularity.d/labels.json")
IMAGE_LABELS = LABELS_FILE
# Present inside every podman container (filled only for privileged ones), and inside Docker's.
PODMAN_ENV = Path("/run/.containerenv")
DOCKER_ENV = Path("/.dockerenv")


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """Return the commit of the checkout at `cwd` (or the image's baked commit) and whether it is dirty."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"commit": os.environ.get("BIOMED_GIT_COMMIT"), "dirty": None}
    # Untracked files are ignored: pipeline outputs appear there during every run.
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=cwd))
    return {"commit": commit, "dirty": dirty}


def lock_path() -> Path:
    """Return the lock file that describes this environment (BIOMED_LOCK or requirements/cpu.lock)."""
    return Path(os.environ.get("BIOMED_LOCK", DEFAULT_LOCK))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _containerenv(path: Path) -> dict[str, str] | None:
    """podman's `/run/.containerenv` as {key: value}; None when absent (not inside podman).

    podman writes the file into every container but fills it (engine, image, imageid, …) only for
    privileged ones; an empty file still says "inside podman".
    """
    try:
        text = path.read_text()
    except OSError:
        return None
    pairs = (line.partition("=") for line in text.splitlines())
    return {k.strip(): v.strip().strip('"') for k, sep, v in pairs if sep}


def _runtime(apptainer: str | None, podman: dict[str, str] | None) -> str | None:
    if apptainer:
        return "apptainer"
    if podman is not None:
        return "podman"
    return "docker" if DOCKER_ENV.exists() else None


def container_identity() -> dict[str, Any] | None:
    """Return the image identity when running inside Apptainer, podman or Docker, else None.

    `labels` are the image's build labels (base identity, lock hash, version, commit): Apptainer's
    own file, else the copy the recipes bake into the image (`image_labels.LABELS_FILE`). `image`
    is the image as the runtime names it: the SIF path, podman's image name, or the reference the
    launcher passed (BIOMED_CONTAINER_IMAGE), else the image's own BIOMED_IMAGE.
    """
    apptainer = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    podman = _containerenv(PODMAN_ENV)
    labels = {**_read_json(IMAGE_LABELS), **_read_json(APPTAINER_LABELS)}
    # Docker's marker alone does not count: this machine may itself be a Docker container.
    if apptainer is None and podman is None and not labels and not os.environ.get("BIOMED_IMAGE"):
        return None
    runtime = _runtime(apptainer, podman)
    image = (
        apptainer
        or (podman or {}).get("image")
        or os.environ.get("BIOMED_CONTAINER_IMAGE")
        or os.environ.get("BIOMED_IMAGE")
    )
    ident: dict[str, Any] = {"runtime": runtime, "image": image, "labels": labels}
    if podman and podman.get("imageid"):
        ident["image_id"] = podman["imageid"]
    if apptainer and Path(apptainer).is_file():
        ident["sha256"] = sha256_file(apptainer)
    return ident


def _torch_versions() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    nccl = None
    if torch.cuda.is_available():
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # NCCL absent from this build
            nccl = None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl,
        "cuda_available": torch.cuda.is_available(),
    }


@functools.lru_cache(maxsize=1)
def packages() -> dict[str, str]:
    """Return {normalised name: version} of every installed distribution (the one import would load)."""
    out: dict[str, str] = {}
    for dist in md.distributions():
        name = dist.name  # metadata's `Name`; None where a broken install has none
        # distributions() follows sys.path: where a name is installed twice (PYTHONPATH over the
        # interpreter's site-packages) the first one is what `import` uses, so it is the one kept.
        if name:
            out.setdefault(normalise(name), dist.version)
    return dict(sorted(out.items()))


def normalise(name: str) -> str:
    """PEP 503 name normalisation (`Foo_Bar.baz` → `foo-bar-baz`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def fingerprint() -> dict[str, Any]:
    """Return the environment fingerprint stored in every manifest and printed by `biomed-llama env`.

    Everything in it is read from the running environment (installed distributions, the imported
    torch), never from the lock: the lock is named (path, sha256) and what differs from it is listed
    (`lock.drift`), so a run outside the image (a cluster's own torch) says so in every manifest.
    """
    lock = lock_path()
    installed = packages()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **_torch_versions(),
        "git": git_state(),
        "lock": {
            "path": str(lock),
            "sha256": sha256_file(lock) if lock.is_file() else None,
            "drift": lock_drift(lock, installed),
        },
        "container": container_identity(),
        "packages": installed,
    }


# ---- the lock, and what of it the environment differs from ----

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;([^\\#]*))?")


@dataclass(frozen=True)
class Drift:
    """One package whose installed state differs from the lock (None = absent on that side)."""

    name: str
    locked: str | None
    installed: str | None

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.name}: locked {self.locked}, not installed"
        if self.locked is None:
            return f"{self.name}: installed {self.installed}, not in the lock"
        return f"{self.name}: locked {self.locked}, installed {self.installed}"


def read_lock(path: str | Path) -> dict[str, str]:
    """Return {normalised name: version} of a lock's `name==version` lines whose marker holds here.

    Continuation lines (`--hash=…`), comments and options are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"lock file {path} not found (BIOMED_LOCK selects another)")
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if not m:
            continue
        marker = (m.group(3) or "").strip()
        if marker and not Marker(marker).evaluate():
            continue  # a pin for another platform or Python
        pins[normalise(m.group(1))] = m.group(2)
    return pins


def versions_match(locked: str, installed: str) -> bool:
    """PEP 440 `==`: equal versions; a lock without a local label accepts any (`2.13.0` ~ `2.13.0+cpu`)."""
    try:
        lv, iv = Version(locked), Version(installed)
    except InvalidVersion:
        return locked == installed
    return lv == iv if lv.local else lv == Version(iv.public)


def compare(locked: Mapping[str, str], installed: Mapping[str, str], *, allow_extra: bool = False) -> list[Drift]:
    """Drift between a lock and installed versions: missing, different, and (unless allowed) unlocked packages."""
    drift = [
        Drift(n, v, installed.get(n))
        for n, v in sorted(locked.items())
        if n not in installed or not versions_match(v, installed[n])
    ]
    if not allow_extra:
        drift += [Drift(n, None, v) for n, v in sorted(installed.items()) if n not in locked and n not in UNLOCKED_OK]
    return sorted(drift, key=lambda d: d.name)


# Installer tooling and the package itself are in every environment without being locked.
UNLOCKED_OK = frozenset({"pip", "setuptools", "wheel", "biomed-llama"})


@functools.lru_cache(maxsize=8)
def _pins(path: str, digest: str) -> dict[str, str]:
    """`read_lock`, once per lock content (every manifest of a run compares with the same lock)."""
    return read_lock(path)


def lock_drift(lock: str | Path, installed: Mapping[str, str]) -> list[str] | None:
    """The locked packages `installed` lacks or has at other versions (`Drift` lines); None without a lock file.

    Packages the lock does not name are not counted: a cluster's extra tools do not change the locked
    ones, and `biomed-llama env check` (without `--allow-extra`) is the strict comparison.
    """
    lock = Path(lock)
    if not lock.is_file():
        return None
    return [str(d) for d in compare(_pins(str(lock), sha256_file(lock)), installed, allow_extra=True)]


# Every file of a folder is hashed, dotfiles included (a file slipped into an output must fail
# `verify` whatever its name), except its own top-level manifest and the files DVC and git keep
# beside the outputs they track: DVC writes `.gitignore` into the folder holding a tracked output
# and reads `.dvcignore`; no stage reads either.
NOT_CONTENT = frozenset({".gitignore", ".dvcignore"})


def _hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        # A bytecode cache counts like any file: a planted .pyc beside an imported utils.py would be
        # code. `evaluate` writes none (sys.dont_write_bytecode), so one appearing fails `verify`.
        if p.is_file() and rel != MANIFEST and p.name not in NOT_CONTENT:
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return files


def describe_inputs(inputs: Iterable[str | Path]) -> dict[str, Any]:
    """Describe inputs: a folder with a manifest by that manifest's hash, any other file by its own hash.

    Folders with a manifest are verified first: a tampered input raises IntegrityError.
    """
    out: dict[str, Any] = {}
    for raw in inputs:
        p = Path(raw)
        if p.is_dir() and (p / MANIFEST).is_file():
            require_verified(p)
            out[str(raw)] = {"manifest_sha256": sha256_file(p / MANIFEST)}
        elif p.is_dir():
            out[str(raw)] = {"files": _hash_files(p)}
        elif p.is_file():
            out[str(raw)] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        else:
            raise IntegrityError(f"input {raw} does not exist")
    return out


def require_trusted_model(path: str | Path, *, external: bool, opt_in: str) -> bool:
    """Refuse a model folder without a manifest unless it is `external` (the explicit opt-in, the param `opt_in`);
    return whether it has a manifest (then the stage verifies it against it).

    A stage's output always has one, so a missing manifest means it was removed (which must not
    skip the check) or the model was made elsewhere (a downloaded base model: say so with the opt-in).
    """
    has_manifest = (Path(path) / MANIFEST).is_file()
    if not has_manifest and not external:
        raise IntegrityError(
            f"refusing model {path}: no {MANIFEST} (a stage output whose manifest was removed, or a "
            f"model made elsewhere); for an external base model set {opt_in}: true"
        )
    return has_manifest


def trusted_model(path: str | Path, *, external: bool, opt_in: str) -> dict[str, Any]:
    """Check a model folder before a stage reads it; return its record for the `inputs` of a manifest.

    With a manifest it must match (IntegrityError otherwise) and is recorded by the manifest's hash;
    an external one (`require_trusted_model`) is recorded by the hash of every file, marked external.
    """
    if require_trusted_model(path, external=external, opt_in=opt_in):
        return describe_inputs([path])
    return {str(path): {"external": True, "files": _hash_files(Path(path))}}


def write_manifest(
    folder: str | Path,
    *,
    stage: str,
    params: dict[str, Any],
    inputs: Iterable[str | Path] = (),
    extra: dict[str, Any] | None = None,
    described: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash every file in `folder` and write `folder/manifest.json`; return the manifest.

    `described`: inputs already checked and described (`trusted_model`), recorded as they are.
    """
    folder = Path(folder)
    manifest = {
        "version": MANIFEST_VERSION,
        "stage": stage,
        "files": _hash_files(folder),
        "inputs": {**describe_inputs(inputs), **(described or {})},
        "params": params,
        "environment": fingerprint(),
        **({"extra": extra} if extra else {}),
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def _read_manifest(folder: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest, []) or (None, [the one problem]) for `folder/manifest.json`."""
    mpath = folder / MANIFEST
    if not folder.exists():  # say so, not "no manifest": e.g. a relative path from outside the checkout
        return None, [
            f"{folder}: no such folder (looked in {Path.cwd()}; run from the checkout, or run the stage that makes it)"
        ]
    if not mpath.is_file():
        return None, [f"{folder}: no {MANIFEST}"]
    try:
        manifest = json.loads(mpath.read_text())
        if not isinstance(manifest.get("files"), dict):
            raise KeyError("files")
    except (ValueError, KeyError, AttributeError) as e:
        return None, [f"{mpath}: unreadable manifest ({e!r})"]
    return manifest, []


def _compare_files(where: Path, expected: dict[str, Any], actual: dict[str, Any], what: str) -> list[str]:
    """Problems of the files `actual` against `expected` ({rel: {sha256, bytes}}), `where/rel` named."""
    problems = []
    for rel, meta in expected.items():
        got = actual.get(rel)
        if got is None:
            problems.append(f"{where / rel}: missing")
        elif got["bytes"] != meta["bytes"]:
            problems.append(f"{where / rel}: size {got['bytes']} != {meta['bytes']} in {what}")
        elif got["sha256"] != meta["sha256"]:
            problems.append(f"{where / rel}: sha256 differs from {what}")
    problems += [f"{where / rel}: not in {what}" for rel in actual if rel not in expected]
    return problems


def verify(folder: str | Path) -> list[str]:
    """Return a list of problems (missing, changed, extra files) of `folder` against its manifest."""
    folder = Path(folder)
    manifest, problems = _read_manifest(folder)
    if manifest is None:
        return problems
    return _compare_files(folder, manifest["files"], _hash_files(folder), "manifest")


def _input_problems(raw: str, recorded: dict[str, Any]) -> list[str]:
    """Problems of one recorded input (as `describe_inputs` wrote it) against the path as it is now."""
    p = Path(raw)
    if not p.exists():
        return [f"input {raw}: missing"]
    if "manifest_sha256" in recorded:
        if not (p / MANIFEST).is_file() or sha256_file(p / MANIFEST) != recorded["manifest_sha256"]:
            return [f"input {raw}: its {MANIFEST} differs from the one recorded (the stage that made it reran)"]
        return [f"input {x}" for x in verify(p)]
    if "files" in recorded:
        if not p.is_dir():
            return [f"input {raw}: no longer a folder"]
        return [f"input {x}" for x in _compare_files(p, recorded["files"], _hash_files(p), "the recorded inputs")]
    if not p.is_file():
        return [f"input {raw}: no longer a file"]
    if p.stat().st_size != recorded.get("bytes") or sha256_file(p) != recorded.get("sha256"):
        return [f"input {raw}: sha256 differs from the one recorded"]
    return []


def verify_inputs(folder: str | Path) -> list[str]:
    """Return the problems of `folder`'s recorded inputs (manifest `inputs`) against those paths as they are now.

    Paths are read as recorded: relative ones from the directory the stage ran in (the checkout).
    """
    folder = Path(folder)
    manifest, problems = _read_manifest(folder)
    if manifest is None:
        return problems
    for raw, recorded in (manifest.get("inputs") or {}).items():
        problems += _input_problems(raw, recorded)
    return problems


def require_verified(folder: str | Path) -> None:
    """Raise IntegrityError (one line, naming the first bad file) if `folder` fails `verify`."""
    problems = verify(folder)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"refusing input {folder}: {problems[0]}{more}; rerun the stage that made it")


def require_current_inputs(folder: str | Path) -> int:
    """Raise IntegrityError (one line, the first stale input) if `folder`'s recorded inputs changed; return their number."""
    problems = verify_inputs(folder)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"{folder} is stale: {problems[0]}{more}; rerun the stage that made it")
    manifest, _ = _read_manifest(Path(folder))
    return len(manifest.get("inputs") or {}) if manifest else 0
