#!/usr/bin/env python3
"""`make image-test`: the demo pipeline inside the CPU twin image, compared with the same run on the host.

1. `biomed-llama env check` inside the image (its packages against the lock it was built from),
   through the same `container_prefix` the stages use; `collect_env` is saved beside it.
2. Two clones of this checkout's HEAD under build/image-test/: `host` runs `dvc repro` with
   `launch.container: none` (this venv), `podman` with `launch.container: podman` and
   `launch.image: IMAGE`, so every stage runs inside the image.
3. Every output folder of the podman run has a manifest naming the image (runtime, image, labels
   with the lock's hash), and the data stages' outputs (extract, tokenize, instruct-mix,
   prepare-eval) are byte-identical to the host's: same files, same sha256 and size. (The
   manifest files themselves differ: they record where they were made.)
4. A second `dvc repro` in the podman clone has nothing to do.
Timings and results go to build/image/test.json; the exit status is 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.container import container_prefix
from biomed_llama.provenance import verify

ROOT = Path(__file__).resolve().parents[1]

# The outputs of the stages that only read and rewrite data: these must not depend on where they ran.
DATA_OUTPUTS = ("data/extracted", "data/tokens", "data/instruct", "data/eval")
OUTPUT_ROOTS = ("data", "models")


def clone(dst: Path) -> None:
    """A fresh clone of this checkout's HEAD at `dst` (what CI has: committed files only)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dst)], check=True)


def set_launch(repo: Path, container: str, image: str) -> None:
    """Set `launch.container` and `launch.image` in the clone's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault("launch", {}).update({"container": container, "image": image})
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    """Run `cmd` in `cwd` with this venv's bin first on PATH; return (seconds, output); exit on failure."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    out = proc.stdout + proc.stderr
    log.write_text(out)
    if proc.returncode != 0:
        sys.exit(f"image-test: `{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}, log {log}):\n{out[-3000:]}")
    return seconds, out


def manifests(repo: Path) -> dict[str, dict]:
    """{output folder (relative): its manifest} for every output folder under data/ and models/."""
    found = {}
    for top in OUTPUT_ROOTS:
        for path in sorted((repo / top).rglob("manifest.json")):
            found[path.parent.relative_to(repo).as_posix()] = json.loads(path.read_text())
    return found


def image_problems(repo: Path, found: dict[str, dict], image: str) -> list[str]:
    """Problems with the podman run's manifests: a folder that fails verify or does not name the image."""
    lock_sha = hashlib.sha256((repo / "requirements/cpu.lock").read_bytes()).hexdigest()
    problems = [p for folder in found for p in verify(repo / folder)]
    for folder, manifest in found.items():
        ident = manifest["environment"].get("container") or {}
        labels = ident.get("labels") or {}
        if ident.get("runtime") != "podman" or ident.get("image") != image:
            problems.append(f"{folder}: manifest's container is {ident.get('runtime')}/{ident.get('image')}, not podman/{image}")
        elif labels.get("biomed.lock.sha256") != lock_sha:
            problems.append(f"{folder}: image label biomed.lock.sha256 {labels.get('biomed.lock.sha256')} != cpu.lock's {lock_sha}")
    return problems


def data_problems(host: dict[str, dict], inside: dict[str, dict]) -> list[str]:
    """Differences between the host's and the image's data-stage outputs (per file sha256 and size)."""
    problems = []
    for folder in DATA_OUTPUTS:
        if folder not in host or folder not in inside:
            problems.append(f"{folder}: no manifest in the {'host' if folder not in host else 'podman'} run")
            continue
        a, b = host[folder]["files"], inside[folder]["files"]
        problems += [f"{folder}/{rel}: differs between host and image" for rel in sorted(a.keys() | b.keys())
                     if a.get(rel) != b.get(rel)]
    return problems


def inside_checks(image: str, repo: Path, out: Path) -> float:
    """`env check` and `collect_env` inside the image (via container_prefix); return env check's seconds."""
    prefix = container_prefix(LaunchConfig(container="podman", image=image), workdir=repo, gpu=False)
    seconds, text = run([*prefix, "biomed-llama", "env", "check"], repo, out / "env-check.txt")
    print(f"image-test: env check inside {image}: " + " / ".join(
        line for line in text.splitlines() if line.startswith(("ok:", "image:"))))
    run([*prefix, "python", "-m", "torch.utils.collect_env"], repo, out / "collect-env.txt")
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Run the checks above; write build/image/test.json; exit 1 listing the problems."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="localhost/biomed-llama:cpu", help="podman image (make image)")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "image-test", help="where the clones go")
    args = ap.parse_args(argv)
    out = ROOT / "build" / "image"
    out.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        print("image-test: warning: uncommitted changes are not in the clones (they hold HEAD)")
    result: dict = {"image": args.image}
    for name, container in (("host", "none"), ("podman", "podman")):
        repo = args.work / name
        clone(repo)
        set_launch(repo, container, args.image)
        if container == "podman":
            result["env_check_seconds"] = round(inside_checks(args.image, repo, out), 1)
        seconds, _ = run([str(Path(sys.executable).with_name("dvc")), "repro"], repo, out / f"repro-{name}.txt")
        result[f"demo_seconds_{name}"] = round(seconds, 1)
        print(f"image-test: dvc repro ({name}): {seconds:.0f} s")
    podman_repo = args.work / "podman"
    _, again = run([str(Path(sys.executable).with_name("dvc")), "repro"], podman_repo, out / "repro-podman-again.txt")
    host, inside = manifests(args.work / "host"), manifests(podman_repo)
    problems = image_problems(podman_repo, inside, args.image) + data_problems(host, inside)
    problems += ["second dvc repro ran stages"] if "Running stage" in again else []
    # Beyond the data stages equality is not required (training may differ by platform); record it.
    others = {f: sorted(k for k in inside[f]["files"].keys() | host.get(f, {}).get("files", {}).keys()
                        if inside[f]["files"].get(k) != host.get(f, {}).get("files", {}).get(k))
              for f in inside if f not in DATA_OUTPUTS}
    result.update(outputs=sorted(inside), problems=problems, other_outputs_files_differing=others)
    (out / "test.json").write_text(json.dumps(result, indent=1) + "\n")
    for line in problems:
        print(f"image-test: {line}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"image-test: ok: {len(inside)} output folders made inside {args.image}, each manifest names it; "
          f"data outputs byte-identical to the host run; a second dvc repro is a no-op")


if __name__ == "__main__":
    main()
