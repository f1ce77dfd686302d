"""The training stages as real Slurm jobs on the local two-node cluster (2 nodes × 1 CPU rank, gloo):
`dvc repro` through `launch.mode: slurm`, equal losses to a local 2-rank run, preemption with
requeue and an identical result, and the failure paths (a dead rank, a stage error, the time limit).
Pretraining and its preemption also run inside the CPU twin image (`launch.container: podman`, one
container per node) and must equal the venv's job bit for bit.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from biomed_llama.train.checkpoint import SAVES_FILE, list_checkpoints
from conftest import BIN, run, run_env, set_params

pytestmark = pytest.mark.integration

DVC = str(BIN / "dvc")
CLI = str(BIN / "biomed-llama")


@pytest.fixture(scope="module")
def slurm_pipeline(demo_base: Path, slurm_cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo checkout after `dvc repro` of every training stage as Slurm jobs."""
    import shutil

    dst = tmp_path_factory.mktemp("slurm-pipeline") / "repo"
    shutil.copytree(demo_base, dst, symlinks=True)
    run([DVC, "repro", "finetune-instruct", "finetune-task"], dst, run_env(slurm_cluster))
    return dst


def _curve(path: Path) -> list[tuple[str, str, str, str]]:
    """(step, loss, grad_norm, lr) rows of a loss.tsv, as written (repr floats)."""
    with open(path, newline="") as f:
        return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in csv.DictReader(f, delimiter="\t")]


def _logs(checkout: Path, stage: str) -> list[Path]:
    return sorted((checkout / "logs/slurm").glob(f"biomed-{stage}-*.out"))


def _job_id(log: Path) -> str:
    return log.stem.rsplit("-", 1)[1]


def _locked(checkout: Path) -> dict:
    """The stages dvc.lock records."""
    lock = checkout / "dvc.lock"
    return yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}


def _scontrol_job(cluster, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=cluster.env, capture_output=True,
                         text=True, check=True).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def test_training_stages_run_on_two_nodes_and_match_a_local_two_rank_run(slurm_pipeline: Path, slurm_cluster):
    co, env = slurm_pipeline, run_env(slurm_cluster)
    lock = _locked(co)
    for stage in ("pretrain", "finetune-instruct", "finetune-task@medqa", "finetune-task@medmcqa",
                  "finetune-task@pubmedqa"):
        assert stage in lock, f"dvc.lock has no {stage}"
    assert "up to date" in run([DVC, "status", "finetune-instruct", "finetune-task"], co, env).stdout
    run([CLI, "verify", "models/pretrained"], co, env)
    for log in _logs(co, "pretrain") + _logs(co, "finetune"):
        text = log.read_text()
        job = _scontrol_job(slurm_cluster, _job_id(log))
        assert job["JobState"] == "COMPLETED" and job["NodeList"] == "n[1-2]" and job["NumNodes"] == "2"
        assert "mesh (replicate×shard) 2×1 on cpu" in text, log  # replicate across the two nodes
    # The same params on this machine: torchrun --standalone, 2 ranks, the same 2 × 1 mesh.
    out = co.parent / "local"
    local = ["--set", "launch.mode=local", "--set", "launch.nproc_per_node=2", "--set", "pretrain.shard_size=1"]
    run([CLI, "launch", "pretrain", *local, "--set", f"pretrain.output={out}/pretrained",
         "--set", f"pretrain.checkpoint_dir={out}/ckpt", "--set", f"pretrain.metrics={out}/pretrain.json",
         "--set", f"pretrain.plots={out}/plots", "--set", f"pretrain.export_init={out}/base"], co, env)
    slurm_curve, local_curve = _curve(co / "plots/pretrain/loss.tsv"), _curve(out / "plots/loss.tsv")
    assert len(slurm_curve) == 34 and slurm_curve == local_curve  # every step's loss, grad norm and lr, bit for bit
    assert (co / "models/pretrained/model.safetensors").read_bytes() == (out / "pretrained/model.safetensors").read_bytes()
    run([CLI, "launch", "finetune", "--mode", "instruct", *local, "--set", f"finetune.instruct_output={out}/instruct",
         "--set", f"finetune.checkpoints={out}/ft-ckpt", "--set", f"finetune.metrics_prefix={out}/ft_",
         "--set", f"finetune.plots={out}/ft-plots"], co, env)
    assert _curve(co / "plots/finetune/instruct/loss.tsv") == _curve(out / "ft-plots/instruct/loss.tsv")


def _short(line: str, width: int = 200) -> str:
    """A log line for the test's printout: its head and tail when longer than `width`."""
    return line if len(line) <= width else f"{line[:width - 63]} … {line[-60:]}"


def _in_image(checkout: Path, image: str) -> None:
    """Run the checkout's stages inside `image` (podman): on each node, srun starts one container."""
    set_params(checkout, launch={"container": "podman", "image": image})


def _check_ran_in_image(checkout: Path, log_text: str, image: str) -> list[str]:
    """Assert that every start of the job ran podman with `image` on both nodes and that the exported
    model's manifest names the image (runtime, name, the lock's hash); return the node lines."""
    starts = len(re.findall(r"^biomed-llama: job \d+ start ", log_text, re.M))
    lines = re.findall(r"^biomed-llama: node n\d task \d runs: .*$", log_text, re.M)
    for node, task in (("n1", 0), ("n2", 1)):
        ran = [ln for ln in lines if ln.startswith(f"biomed-llama: node {node} task {task} runs: ")]
        in_image = [" podman run " in ln and ln.endswith(f" {image} torchrun") for ln in ran]
        assert len(ran) == starts and all(in_image), lines
    ident = json.loads((checkout / "models/pretrained/manifest.json").read_text())["environment"]["container"]
    lock = hashlib.sha256((checkout / "requirements/cpu.lock").read_bytes()).hexdigest()
    assert ident["runtime"] == "podman" and ident["image"] == image, ident
    assert ident["labels"]["biomed.lock.sha256"] == lock and ident["labels"]["biomed.lock"] == "cpu.lock", ident
    return lines


def test_pretrain_inside_the_image_equals_the_venv_job(image: str, demo_checkout: Path, slurm_pipeline: Path,
                                                       slurm_cluster):
    co, env = demo_checkout, run_env(slurm_cluster)
    _in_image(co, image)
    start = time.monotonic()
    run([DVC, "repro", "pretrain"], co, env)
    took = time.monotonic() - start
    [log] = _logs(co, "pretrain")
    text = log.read_text()
    job = _scontrol_job(slurm_cluster, _job_id(log))
    assert job["JobState"] == "COMPLETED" and job["NodeList"] == "n[1-2]" and job["Restarts"] == "0"
    assert "mesh (replicate×shard) 2×1 on cpu" in text, text[-4000:]  # c10d across the two containers
    lines = _check_ran_in_image(co, text, image)
    # The venv's job of the same params (slurm_pipeline): every step and the weights, bit for bit.
    curve = _curve(co / "plots/pretrain/loss.tsv")
    assert len(curve) == 34 and curve == _curve(slurm_pipeline / "plots/pretrain/loss.tsv")
    assert (co / "models/pretrained/model.safetensors").read_bytes() == \
        (slurm_pipeline / "models/pretrained/model.safetensors").read_bytes()
    assert "pretrain" in _locked(co)
    run([CLI, "verify", "models/pretrained"], co, env)
    print(f"\npodman job {_job_id(log)}: dvc repro pretrain {took:.0f} s; final loss {curve[-1][1]} = venv's\n"
          + "\n".join(map(_short, lines)))


def _wait_for_line(checkout: Path, stage: str, pattern: str, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """The job's log once a line matching `pattern` is in it; fails if the launch ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in _logs(checkout, stage):
            if re.search(pattern, log.read_text(errors="replace"), re.M):
                return log
        if proc.poll() is not None:
            pytest.fail(f"the launch ended ({proc.returncode}) before {pattern!r}:\n{proc.communicate()}")
        time.sleep(0.1)
    pytest.fail(f"no {pattern!r} in the {stage} log after {timeout} s")


@pytest.mark.parametrize("container", ["none", "podman"])
def test_preempted_job_checkpoints_requeues_and_ends_identical(demo_checkout: Path, slurm_pipeline: Path,
                                                                  slurm_cluster, container: str, request):
    """USR1 to the batch script: it reaches every rank (inside podman: srun → podman → torchrun), which
    checkpoint and exit; the job requeues, resumes and ends with the uninterrupted venv job's weights."""
    co, env = demo_checkout, run_env(slurm_cluster)
    image = request.getfixturevalue("image") if container == "podman" else None
    if image:
        _in_image(co, image)
    proc = subprocess.Popen([DVC, "repro", "pretrain"], cwd=co, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = _wait_for_line(co, "pretrain", r"^step 3/34 ", proc)
    job_id = _job_id(log)
    # What Slurm sends `signal_seconds` before the limit (--signal=B:USR1@N), sent now by hand.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=slurm_cluster.env, check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-6000:]
    text = log.read_text()
    stopped = re.search(r"^error: stopped by signal 10 at step (\d+); checkpoint saved", text, re.M)
    resumed = re.search(r"resumed from \w+/step-(\d+)$", text, re.M)
    assert stopped and resumed and int(resumed.group(1)) == int(stopped.group(1)) < 34, text[-4000:]
    assert f"requeueing job {job_id}" in text and re.search(rf"job {job_id} start \S+ restart 1 ", text)
    job = _scontrol_job(slurm_cluster, job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1" and job["ExitCode"] == "0:0"
    print("\n".join(_short(ln) for ln in text.splitlines()
                    if ln.startswith(("biomed-llama:", "error: stopped", "slurmstepd")) or "resumed from" in ln))
    print("\n".join(ln for ln in slurm_cluster.log("slurmctld").read_text().splitlines()
                    if re.search(rf"JobId={job_id}\b", ln)))
    # The same final weights as the uninterrupted run, and DVC recorded the stage.
    assert (co / "models/pretrained/model.safetensors").read_bytes() == \
        (slurm_pipeline / "models/pretrained/model.safetensors").read_bytes()
    assert _curve(co / "plots/pretrain/loss.tsv") == _curve(slurm_pipeline / "plots/pretrain/loss.tsv")
    assert "pretrain" in _locked(co)
    run([CLI, "verify", "models/pretrained"], co, env)
    if image:
        _check_ran_in_image(co, text, image)


def _rank_pids(checkout: Path, job_id: str, rank: int) -> list[int]:
    """Trainer processes of `rank` in this job, run from this checkout (not any other process on the machine)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or Path(d / "cwd").resolve() != checkout.resolve():
                continue
            environ = (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if (b"biomed_llama" in cmd and f"SLURM_JOB_ID={job_id}".encode() in environ
                and f"RANK={rank}".encode() in environ and b"torch.distributed.run" not in cmd):
            found.append(int(d.name))
    return found


def test_a_dead_rank_fails_the_job_fast(demo_checkout: Path, slurm_cluster):
    co, env = demo_checkout, run_env(slurm_cluster)
    proc = subprocess.Popen([DVC, "repro", "pretrain"], cwd=co, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = _wait_for_line(co, "pretrain", r"^step 2/34 ", proc)
    pids = _rank_pids(co, _job_id(log), rank=1)
    assert len(pids) == 1, pids
    subprocess.run(["kill", "-KILL", str(pids[0])], check=True)  # rank 1 dies (the OOM killer's signal)
    killed = time.monotonic()
    out, _ = proc.communicate(timeout=600)
    took = time.monotonic() - killed
    assert proc.returncode != 0
    assert re.search(rf"error: pretrain: Slurm job {_job_id(log)} ended FAILED \(exit \d+:\d+, 0 requeues\)", out)
    assert took < 60, f"the job took {took:.0f} s to fail after a rank died"  # not gloo's 60-minute timeout
    text = log.read_text()
    assert "exitcode  : -9" in text and "rank      : 1" in text  # torchrun's summary names the dead rank
    assert not (co / "models/pretrained").exists() and "pretrain" not in _locked(co)


def test_a_stage_error_is_one_line_in_the_log_and_the_launch(demo_checkout: Path, slurm_cluster):
    co, env = demo_checkout, run_env(slurm_cluster)
    manifest = co / "data/tokens/manifest.json"
    data = json.loads(manifest.read_text())
    first = next(iter(data["files"]))
    data["files"][first]["sha256"] = "0" * 64  # the tokens no longer match their manifest
    manifest.chmod(0o644)
    manifest.write_text(json.dumps(data))
    proc = run([CLI, "launch", "pretrain"], co, env, check=False)
    assert proc.returncode != 0
    log = _logs(co, "pretrain")[-1]
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error: ")]
    assert errors and all("Traceback" not in e for e in errors)
    launch_line = proc.stderr.strip().splitlines()[-1]
    assert launch_line.startswith(f"error: pretrain: Slurm job {_job_id(log)} ended FAILED")
    assert launch_line.split("): ", 1)[1].split("; log ")[0] in {e[len("error: "):] for e in errors}


def test_time_limit_kill_leaves_nothing_half_written(demo_checkout: Path, slurm_cluster):
    """No pre-limit warning (signal_seconds 0), a run longer than its 1-minute limit: Slurm sends SIGTERM,
    then SIGKILL after its grace (KillWait=0 here: srun still waits about 2 s)."""
    co, env = demo_checkout, run_env(slurm_cluster)
    set_params(co, launch={"time": "1", "signal_seconds": 0, "requeue": False},
               pretrain={"max_steps": 100000, "checkpoint_every": 100000, "log_every": 50})
    proc = run([DVC, "repro", "pretrain"], co, env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"error: pretrain: Slurm job \d+ ended TIMEOUT", out), out[-4000:]
    assert "DUE TO TIME LIMIT" in _logs(co, "pretrain")[-1].read_text()
    # DVC recorded nothing; no stage output exists, whole or in part.
    assert "pretrain" not in _locked(co)
    assert not (co / "models/pretrained").exists() and not (co / "metrics/pretrain.json").exists()
    assert sorted(p.name for p in (co / "models").iterdir()) == ["base"]  # the init export, complete before training
    run([CLI, "verify", "models/base"], co, env)
    # A checkpoint folder is complete (what SIGTERM's save wrote inside Slurm's grace) or a `.tmp` that
    # resuming ignores; `latest_checkpoint` finds only complete ones.
    ckpt = co / "checkpoints/pretrain"
    entries = list(ckpt.iterdir()) if ckpt.exists() else []
    assert {p.name for p in entries if not p.is_dir()} <= {".lock"}, entries  # beside run folders only the run lock
    for run_dir in (p for p in entries if p.is_dir()):
        complete = {p.name for _, p in list_checkpoints(run_dir)}
        for step in run_dir.iterdir():
            assert step.name in complete or step.name.endswith(".tmp") or step.name == SAVES_FILE, step
        for name in complete:
            files = {f.name for f in (run_dir / name).iterdir()}
            assert {".metadata", "trainer.json", "rng-rank0.json", "rng-rank1.json"} <= files, (name, files)
        print(f"time limit: {run_dir.name}: complete {sorted(complete)}, "
              f"partial {sorted(p.name for p in run_dir.iterdir() if p.name not in complete)}")
