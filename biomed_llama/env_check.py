"""Compare the installed packages with the lock (`biomed-llama env check`).

The lock is `provenance.lock_path()`: requirements/cpu.lock here, the image's CUDA lock inside
the container (BIOMED_LOCK). Inside an image the lock file's hash is also compared with the one
recorded at build time (label `biomed.lock.sha256` / BIOMED_LOCK_SHA256), and the report carries
the image's identity.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from biomed_llama.errors import UserError
from biomed_llama.fsutil import sha256_file
from biomed_llama.provenance import container_identity, lock_path, normalise, packages

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;([^\\#]*))?")
# Installer tooling and the package itself are in every environment without being locked.
UNLOCKED_OK = frozenset({"pip", "setuptools", "wheel", "biomed-llama"})
LOCK_LABEL = "biomed.lock.sha256"


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
        if marker:
            from packaging.markers import Marker

            if not Marker(marker).evaluate():
                continue
        pins[normalise(m.group(1))] = m.group(2)
    return pins


def versions_match(locked: str, installed: str) -> bool:
    """PEP 440 `==`: equal versions; a lock without a local label accepts any (`2.13.0` ~ `2.13.0+cpu`)."""
    from packaging.version import InvalidVersion, Version

    try:
        lv, iv = Version(locked), Version(installed)
    except InvalidVersion:
        return locked == installed
    return lv == iv if lv.local else lv == Version(iv.public)


def compare(locked: Mapping[str, str], installed: Mapping[str, str], *, allow_extra: bool = False) -> list[Drift]:
    """Drift between a lock and installed versions: missing, different, and (unless allowed) unlocked packages."""
    drift = [Drift(n, v, installed.get(n)) for n, v in sorted(locked.items())
             if n not in installed or not versions_match(v, installed[n])]
    if not allow_extra:
        drift += [Drift(n, None, v) for n, v in sorted(installed.items())
                  if n not in locked and n not in UNLOCKED_OK]
    return sorted(drift, key=lambda d: d.name)


def image_lock_hash() -> str | None:
    """The lock hash recorded when the image was built (Apptainer label or Docker env), if any."""
    ident = container_identity() or {}
    value = (ident.get("labels") or {}).get(LOCK_LABEL) or os.environ.get("BIOMED_LOCK_SHA256")
    return value if value and value != "unset" else None


def check(lock: str | Path | None = None, *, allow_extra: bool = False) -> dict[str, Any]:
    """Check this environment against `lock` (default `lock_path()`); return a JSON-able report.

    `ok` is false when any package drifted or the lock's hash differs from the image's record.
    """
    path = Path(lock) if lock else lock_path()
    drift = compare(read_lock(path), packages(), allow_extra=allow_extra)
    digest = sha256_file(path)
    problems = [str(d) for d in drift]
    recorded = image_lock_hash()
    if recorded and recorded != digest:
        problems.append(f"{path}: sha256 {digest[:12]}… differs from the image's recorded {recorded[:12]}…")
    return {
        "lock": str(path),
        "lock_sha256": digest,
        "container": container_identity(),
        "drift": [{"name": d.name, "locked": d.locked, "installed": d.installed} for d in drift],
        "problems": problems,
        "ok": not problems,
    }
