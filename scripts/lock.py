#!/usr/bin/env python3
"""Generate both dependency locks from pyproject.toml (run through `make lock`).

* `requirements/cpu.lock`: exact pins for the CPU setup (`make demo`, `make test`, CI, the CPU
  twin image), solved for the CI machine's Python on linux x86_64, hash-checked like cuda.lock.
  torch is the CPU build: its pin keeps the plain version (so both locks agree on it) and carries
  the sha256 of the CPU wheel found in `--torch-wheels` (pip's find-links; PyPI has no CPU build),
  so `pip --require-hashes` can take only that wheel. The CUDA-only wheels the PyPI linux build
  of torch would pull (nvidia-*, triton, cuda-*) are left out of the solve.
* `requirements/cuda.lock`: the container's lock, hash-checked (`pip install --require-hashes
  --no-deps -r`), solved for the image's Python on linux x86_64 with PyPI's default linux torch
  (a CUDA build). It is constrained by cpu.lock, so the two agree on every package they share.

The solver is `uv pip compile`. Pins already in a lock are kept (uv prefers them) unless
`--upgrade` is given, so regenerating is a no-op until pyproject.toml changes.
Only the standard library is used: this runs before any environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
PLATFORM = "x86_64-manylinux_2_28"
# The CPU build of torch has none of these; PyPI's linux build of the same version does. The set
# is computed (linux solve minus windows solve of the pinned torch), never listed by hand.
CPU_REFERENCE_PLATFORM = "x86_64-pc-windows-msvc"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")

HEADER = """\
# {title}
# Generated from pyproject.toml by `make lock` (scripts/lock.py, uv {uv_version}); do not edit by hand.
# Target: linux x86_64 ({platform}), Python {python}; extras: {extras}.
{extra}"""


def read_pins(path: Path) -> dict[str, str]:
    """Return {normalised name: version} of the `name==version` lines of a requirements file."""
    pins: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            m = PIN.match(line.strip())
            if m:
                pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def run_uv(uv: list[str], args: list[str]) -> str:
    """Run `uv pip compile ARGS` and return its stdout; exit with uv's message on failure."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
    proc = subprocess.run([*uv, "pip", "compile", "--quiet", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"uv pip compile failed:\n{proc.stderr.strip()}")
    return proc.stdout


def cuda_only_packages(uv: list[str], torch_pin: str, python: str, tmp: Path) -> list[str]:
    """Names that torch==PIN pulls in on linux but not on a CPU-only platform (its CUDA runtime)."""
    req = tmp / "torch.in"
    req.write_text(f"torch{torch_pin}\n")
    common = [str(req), "--python-version", python, "--no-header", "--no-annotate"]
    linux = read_pins_text(run_uv(uv, [*common, "--python-platform", PLATFORM]))
    cpu = read_pins_text(run_uv(uv, [*common, "--python-platform", CPU_REFERENCE_PLATFORM]))
    return sorted(set(linux) - set(cpu))


def read_pins_text(text: str) -> dict[str, str]:
    """`read_pins` for text already in memory."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        return read_pins(Path(f.name))
    finally:
        os.unlink(f.name)


def compile_lock(uv: list[str], out: Path, args: list[str], header: str, upgrade: bool, tmp: Path) -> None:
    """Solve into `out`, keeping its current pins as preferences, and write it with `header`."""
    work = tmp / out.name
    if out.is_file() and not upgrade:
        shutil.copyfile(out, work)  # uv prefers the versions already in its output file
    body = run_uv(uv, ["pyproject.toml", "--no-header", "--output-file", str(work),
                       "--python-platform", PLATFORM, *(["--upgrade"] if upgrade else []), *args])
    del body  # uv wrote `work`; stdout repeats it
    text = work.read_text().replace(str(tmp) + "/", "")
    out.write_text(header + text)


def local_wheel_hashes(folder: Path, name: str, version: str, python: str) -> list[str]:
    """sha256 of the wheels `name-version+LOCAL-cpXY-…linux…x86_64.whl` in `folder` (the CPU builds)."""
    tag = "cp" + python.replace(".", "")
    wheels = sorted(folder.glob(f"{name}-{version}+*-{tag}-{tag}-*linux*_x86_64.whl"))
    if not wheels:
        sys.exit(f"no {name} {version} wheel for {tag} linux x86_64 in {folder} (--torch-wheels)")
    return [hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels]


def replace_hashes(lock: Path, name: str, hashes: list[str]) -> None:
    """Rewrite the `--hash` lines of `name`'s entry in a hashed lock (uv's layout) to `hashes`."""
    lines = lock.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if PIN.match(line) and PIN.match(line).group(1) == name)
    end = start + 1
    while end < len(lines) and lines[end].lstrip().startswith("--hash="):
        end += 1
    pin = lines[start].split()[0]
    entry = [f"{pin} \\\n"] + [f"    --hash=sha256:{h}" + (" \\\n" if i < len(hashes) - 1 else "\n")
                                for i, h in enumerate(hashes)]
    lock.write_text("".join(lines[:start] + entry + lines[end:]))


def uv_command(explicit: str | None) -> list[str]:
    """The uv executable: --uv, then $UV, then uv on PATH, then `python -m uv`."""
    for cand in (explicit, os.environ.get("UV"), shutil.which("uv")):
        if cand:
            return [cand]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    sys.exit("uv not found: `make lock` installs it into a tool venv; or pass --uv PATH")


def main(argv: list[str] | None = None) -> None:
    """Regenerate requirements/cpu.lock, then requirements/cuda.lock constrained by it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uv", help="uv executable (default: $UV, PATH, python -m uv)")
    ap.add_argument("--cpu-python", default="3.11", help="Python of the CPU setup / CI (default 3.11)")
    ap.add_argument("--image-python", default="3.11", help="Python of the image (Debian 12: 3.11, as the CPU setup)")
    ap.add_argument("--upgrade", action="store_true", help="ignore current pins, take the newest allowed")
    ap.add_argument("--torch-wheels", type=Path, default=Path((os.environ.get("PIP_FIND_LINKS") or "/opt/wheels").split()[0]),
                    help="folder holding the CPU torch wheel (default: first of $PIP_FIND_LINKS, else /opt/wheels)")
    args = ap.parse_args(argv)
    uv = uv_command(args.uv)
    uv_version = subprocess.run([*uv, "--version"], capture_output=True, text=True).stdout.split()[1]
    cpu_lock, cuda_lock = REQ / "cpu.lock", REQ / "cuda.lock"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        torch_pin = "" if args.upgrade else f"=={read_pins(cpu_lock)['torch']}" if "torch" in read_pins(cpu_lock) else ""
        dropped = cuda_only_packages(uv, torch_pin, args.cpu_python, tmp)
        # An override with a never-true marker removes a requirement from the solve.
        overrides = tmp / "cpu-overrides.txt"
        overrides.write_text("".join(f"{n} ; sys_platform == 'never'\n" for n in dropped))
        compile_lock(uv, cpu_lock, ["--extra", "test", "--python-version", args.cpu_python,
                                    "--generate-hashes", "--override", str(overrides)],
                     HEADER.format(title="Exact pins of the CPU environment (make demo, make test, CI, the CPU twin image).",
                                   uv_version=uv_version, platform=PLATFORM, python=args.cpu_python,
                                   extras="test",
                                   extra="# Install: pip install --require-hashes --no-deps -r requirements/cpu.lock, "
                                         "with the CPU torch wheel's folder in find-links\n# (torch's hash is that "
                                         "wheel's: PyPI's torch of the same version is the CUDA build).\n"
                                         "# Left out (CUDA-only deps of torch's linux "
                                         f"build): {', '.join(dropped) or 'none'}.\n"),
                     args.upgrade, tmp)
        replace_hashes(cpu_lock, "torch", local_wheel_hashes(args.torch_wheels, "torch", read_pins(cpu_lock)["torch"],
                                                             args.cpu_python))
        constraints = tmp / "cpu-constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in read_pins(cpu_lock).items()))
        compile_lock(uv, cuda_lock, ["--extra", "gpu", "--extra", "test", "--python-version",
                                     args.image_python, "--generate-hashes", "--constraint", str(constraints)],
                     HEADER.format(title="Hash-checked lock of the container image (singularity/biomed.def, "
                                         "containers/Dockerfile).",
                                   uv_version=uv_version, platform=PLATFORM, python=args.image_python,
                                   extras="gpu, test",
                                   extra="# Install: pip install --require-hashes --no-deps -r requirements/cuda.lock"
                                         "\n# torch is PyPI's default linux build (CUDA); shared pins equal "
                                         "cpu.lock's.\n"),
                     args.upgrade, tmp)
    print(f"wrote {cpu_lock.relative_to(ROOT)} ({len(read_pins(cpu_lock))} pins), "
          f"{cuda_lock.relative_to(ROOT)} ({len(read_pins(cuda_lock))} pins)")


if __name__ == "__main__":
    main()
