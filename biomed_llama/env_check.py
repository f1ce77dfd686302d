"""Compare the installed packages with the lock (`biomed-llama env check`).

The lock is `provenance.lock_path()`: requirements/cpu.lock here, the image's CUDA lock inside
the container (BIOMED_LOCK). Inside an image the lock file's hash is also compared with the one
recorded at build time (label `biomed.lock.sha256` / BIOMED_LOCK_SHA256), and the report carries
the image's identity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from biomed_llama.errors import UserError
from biomed_llama.fsutil import sha256_file

# The lock's reading and comparison live in provenance (every manifest records the drift); re-exported here.
from biomed_llama.provenance import (
    UNLOCKED_OK,
    Drift,
    compare,
    container_identity,
    lock_path,
    packages,
    read_lock,
    versions_match,
)

__all__ = [
    "UNLOCKED_OK",
    "Drift",
    "check",
    "compare",
    "image_lock_hash",
    "read_lock",
    "require_locked",
    "versions_match",
]

LOCK_LABEL = "biomed.lock.sha256"


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


def require_locked(lock: str | Path | None = None) -> str:
    """Raise one UserError line naming the drifted packages unless this environment matches `lock`
    (`check` with extra packages allowed, the image's recorded lock hash compared); return the lock's path."""
    report = check(lock, allow_extra=True)
    if not report["ok"]:
        names = ", ".join(f"{d['name']} {d['installed'] or 'missing'} (locked {d['locked']})" for d in report["drift"])
        raise UserError(
            f"launch.require_locked_env: the environment differs from {report['lock']}: "
            f"{names or report['problems'][0]}; run inside the image, or set launch.require_locked_env: false"
        )
    return report["lock"]
