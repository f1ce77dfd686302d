"""Summary tables of `bench/screen.sh` and `bench/accept.sh` from the files they left in their folder.

    python -m bench.summarize_speed screen DIR
    python -m bench.summarize_speed accept DIR
    python -m bench.summarize_speed single DIR
    python -m bench.summarize_speed titan DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LOG_ROW = re.compile(r"step (\d+)/(\d+) \| loss ([\d.]+) .*tok/s ([\d,]+) \| mfu ([\d.]+)% \| mem ([\d.]+)GiB")
# (the CPU smoke run logs "mfu n/a | mem n/a": its rows are not parsed; its metrics file is used)


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _err(path: Path) -> str:
    """The last meaningful line of a failed run's log."""
    if not path.is_file():
        return "not run"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith(("DEBUG", "  "))]
    errs = [ln for ln in lines if "Error" in ln or ln.startswith("error:")]
    # torchrun's closing `ChildFailedError:` line has no message; the worker's own error line above it has one
    said = [ln for ln in errs if not ln.rstrip().endswith(":")]
    return (said or errs or lines or ["no output"])[-1][:220]


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if x is not None else "n/a"


def _levers(r: dict) -> str:
    """The speed levers of a bench run (its JSON row), as every summary names them."""
    return (f"{r.get('sdpa_backend')}, {','.join(r.get('kernels') or []) or 'no kernels'}, sync {r.get('grad_sync')}, "
            f"compiled loss "
            f"{r.get('compiled_loss')}, budget {r.get('memory_budget', 1.0)}, gathered layers "
            f"{r.get('gathered_layers', 0)}" + (f", float8 {r['float8']}" if r.get("float8") else ""))


def _engine_row(r: dict) -> str:
    levers = f"{_levers(r)}, reshard {r.get('reshard_after_forward')}, host sync {r.get('host_sync')}"
    return (f"| {r['name']} | {levers} | micro {r['micro']} acc {r['acc']} | {r['tok_s_per_gpu']:,.0f} | "
            f"{_pct(r['mfu'])} | {r['peak_mem_gib'] or 0:.1f} |")


def screen(out: Path) -> None:
    """Attention kernels, engine levers on the 8-layer slice, checkpoint stalls, GPU tests."""
    print(f"== screening ({out}) ==")
    att = _json(out / "attention.json")
    print("\n[attention] causal fwd / fwd+bwd, bf16, shape", att["shape"] if att else "?")
    print("| backend | fwd ms | fwd+bwd ms | fwd TFLOP/s | max abs err vs fp64 | note |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for r in (att or {}).get("rows", []):
        if "error" in r:
            print(f"| {r['backend']} | | | | | {r['error']} |")
        else:
            print(f"| {r['backend']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | {r['fwd_tflops']:.0f} | "
                  f"{r['max_abs_err']:.2e} | {r.get('operators', '')} |")
    print("\n[engine levers] LLaMA-7B 8-layer slice, 1 GPU, compile, seq 2048")
    print("| run | levers | batch | tok/s/GPU | MFU | peak GiB |\n| --- | --- | --- | ---: | ---: | ---: |")
    for p in sorted(out.glob("s_*.json")):
        print(_engine_row(_json(p)))
    for p in sorted(out.glob("s_*.log")):
        if not p.with_suffix(".json").is_file():
            print(f"| {p.stem} | failed: {_err(p)} | | | | |")
    _checkpoint(out)
    print(f"\n[gpu tests] {_err(out / 'pytest_gpu.log')}")


def _checkpoint(out: Path) -> None:
    """The rows of `bench_checkpoint.py`: steps before saving, then each save's stall and completion."""
    print("\n[checkpoint] full training state, rank 0 (stall = what the loop waited)")
    rows = [json.loads(ln) for ln in (out / "checkpoint.jsonl").read_text().splitlines()] \
        if (out / "checkpoint.jsonl").is_file() else []
    for r in rows:
        if r["event"] == "steps":
            print(f"steps before saving: {r['s_per_step']:.3f} s/step ({r['shape']}, world {r['world']}, "
                  f"micro {r.get('micro', 1)}, compile {r.get('compile', False)})")
        else:
            size = f"{r['bytes'] / 1e9:.1f} GB" if r.get("bytes") else "?"
            during = f"{r['steps_during']} steps at {r['s_per_step_during']:.3f} s/step" \
                if r.get("steps_during") else "no steps"
            staged = f", host copy {r['staged_s']:.2f} s" if r.get("staged_s") is not None else ""
            lost = f", lost {r['lost_s']:.2f} s (clean {r['s_per_step_clean']:.3f} s/step)" if "lost_s" in r else ""
            print(f"{r['mode']:>5} save at step {r['step']}: stall {r['stall_s']:.2f} s{staged}, complete after "
                  f"{r['complete_s'] or 0:.1f} s, {size}; meanwhile {during}{lost}")
    if not rows:
        print(f"no checkpoint rows: {_err(out / 'checkpoint.log')}")


WARM_STEPS = 2
"""Steps that are not the steady state of a CLI run: the compile (step 1) and, with async checkpoints, the one-time
pinning of the host staging buffers after the first update (step 2)."""


def _cli(out: Path, name: str, world: int = 2, skip_last: bool = False) -> dict | None:
    """Throughput per GPU (`world` GPUs) of a CLI run: the mean of its log windows that start after step `WARM_STEPS`
    (a log row covers the steps since the previous row) and, with `skip_last`, end before its last step (which
    holds the checkpoint save), else its metrics file (the engine's mean over the windows after the first,
    which with `log_every: 1` still holds step 2); peak memory and checkpoint saves from the metrics file."""
    metrics = _json(out / f"{name}_metrics.json")
    rows = [LOG_ROW.search(ln) for ln in (out / f"{name}.log").read_text().splitlines()] \
        if (out / f"{name}.log").is_file() else []
    rows = [m for m in rows if m]
    steps = [int(m.group(1)) for m in rows]
    # a row's window starts after the previous row's step
    steady = [(before + 1, m) for m, before in zip(rows, [0] + steps)
              if before + 1 > WARM_STEPS and not (skip_last and m.group(1) == m.group(2))]
    mem = metrics["peak_memory_gib"] if metrics else max((float(m.group(6)) for m in rows), default=None)
    saves = metrics.get("checkpoint_saves") if metrics else None
    if steady:
        return {"tok_s": sum(float(m.group(4).replace(",", "")) for _, m in steady) / len(steady) / world,
                "mfu": sum(float(m.group(5)) for _, m in steady) / len(steady) / 100, "mem": mem, "saves": saves,
                "steps": steps[-1], "from": f"log, steps {steady[0][0]}-{steady[-1][1].group(1)}"}
    if metrics:
        return {"tok_s": metrics["tokens_per_s_per_device"], "mfu": metrics["mfu"], "mem": mem, "saves": saves,
                "steps": metrics["steps"], "from": "metrics"}
    return None


def _settings(out: Path, name: str) -> str:
    """A CLI run as accept.sh recorded it: its notes (cli_node: "emulated node of 4 GPUs, cap 105.1 GiB"), then its
    batch ("micro 8 acc 8", "?" when not recorded)."""
    path = out / f"{name}.settings"
    lines = path.read_text().splitlines() if path.is_file() else []
    m = re.match(r"micro (\d+) acc (\d+)", lines[0]) if lines else None
    return ", ".join(lines[1:] + [f"micro {m.group(1)} acc {m.group(2)}" if m else "?"])


def _anchor(out: Path, name: str) -> dict | None:
    path = out / f"{name}.log"
    for ln in reversed(path.read_text().splitlines() if path.is_file() else []):
        if ln.startswith("{") and "tok_s_per_gpu" in ln:
            return json.loads(ln)
    return None


def _loss_check(out: Path) -> None:
    old, new = _json(out / "loss_old.json"), _json(out / "loss_new.json")
    if not (old and new):
        print(f"[loss] missing: old {_err(out / 'loss_old.log')} / new {_err(out / 'loss_new.log')}")
        return
    diffs = [abs(a - b) / abs(a) for a, b in zip(old["losses"], new["losses"])]
    print(f"[loss] 7B 8-layer slice, same data and init, {len(diffs)} steps: old ({_levers(old)}) vs new "
          f"({_levers(new)}): max rel diff {max(diffs):.4f}, last {old['losses'][-1]:.4f} vs "
          f"{new['losses'][-1]:.4f} -> {'WITHIN' if max(diffs) < 0.02 else 'OUTSIDE'} bf16 noise (bar 2%)")
    print("    old:", " ".join(f"{v:.3f}" for v in old["losses"][::5]))
    print("    new:", " ".join(f"{v:.3f}" for v in new["losses"][::5]))


def accept(out: Path) -> None:
    """Engine through the CLI vs the FSDP anchor, the 80 GiB run, and the loss check, against the targets."""
    print(f"== acceptance ({out}) ==")
    best, cap = _cli(out, "cli_best"), _cli(out, "cli_cap")
    anchors = {n: _anchor(out, n) for n in ("anchor_m4", "anchor_m5", "anchor_m6") if (out / f"{n}.log").is_file()}
    top = max((a for a in anchors.values() if a), key=lambda a: a["tok_s_per_gpu"], default=None)
    print("| run | tok/s/GPU | MFU | peak GiB | × best anchor |\n| --- | ---: | ---: | ---: | ---: |")
    node = _cli(out, "cli_node")
    runs = (("cli_best", "engine CLI, best settings", best), ("cli_cap", "engine CLI, 80 GiB cap", cap),
            ("cli_node", "engine CLI, 80 GiB card", node))
    for key, name, r in runs:
        if not (out / f"{key}.log").is_file():
            continue
        if r:
            ratio = f"{r['tok_s'] / top['tok_s_per_gpu']:.2f}×" if top else "n/a"
            mem = f"{r['mem']:.1f}" if r["mem"] is not None else "n/a"
            print(f"| {name}, {_settings(out, key)} ({r['from']}, {r['steps']} steps) | {r['tok_s']:,.0f} | "
                  f"{_pct(r['mfu'])} | {mem} | {ratio} |")
        else:
            print(f"| {name} | failed: {_err(out / f'{key}.log')} | | | |")
    for name, a in anchors.items():
        if a:
            print(f"| anchor_fsdp micro {a['micro']} acc {a['acc']} | {a['tok_s_per_gpu']:,} | {_pct(a['mfu_989'])} | "
                  f"{a['peak_mem_gib']} | |")
        else:
            print(f"| {name} | failed: {_err(out / (name + '.log'))} | | | |")
    if best:
        print(f"target MFU >= 60% (best): {'PASS' if best['mfu'] and best['mfu'] >= 0.60 else 'FAIL'}; "
              f">= 1.3x best anchor: {'PASS' if top and best['tok_s'] >= 1.3 * top['tok_s_per_gpu'] else 'FAIL'}")
        if best.get("saves"):
            print("checkpoint saves (best run):", best["saves"])
    if cap:
        ok = cap["mfu"] and cap["mfu"] >= 0.55 and cap["mem"] is not None and cap["mem"] <= 80
        print(f"target MFU >= 55% within 80 GiB: {'PASS' if ok else 'FAIL'}")
    _loss_check(out)


def scaleout(out: Path) -> None:
    """Each mesh of the host: engine vs anchor, scaling efficiency vs 1×2, and the hybrid-mesh loss check."""
    print(f"== scale-out ({out}) ==")
    ref = _json(out / "e_1x2.json")
    print("| mesh | engine tok/s/GPU | MFU | peak GiB | scaling eff. vs 1×2 | anchor tok/s/GPU | × anchor |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in sorted(out.glob("e_*.log"), key=lambda p: p.stem):
        mesh, r = p.stem[2:], _json(p.with_suffix(".json"))
        a = _anchor(out, f"a_{mesh}")
        if not r:
            print(f"| {mesh} | failed: {_err(p)} | | | | | |")
            continue
        eff = f"{r['tok_s_per_gpu'] / ref['tok_s_per_gpu']:.3f}" if ref else "n/a"
        anchor = f"{a['tok_s_per_gpu']:,}" if a else "n/a"
        ratio = f"{r['tok_s_per_gpu'] / a['tok_s_per_gpu']:.2f}×" if a else "n/a"
        print(f"| {mesh} | {r['tok_s_per_gpu']:,.0f} | {_pct(r['mfu'])} | {r['peak_mem_gib'] or 0:.1f} | {eff} | "
              f"{anchor} | {ratio} |")
    single = _json(out / "l_1gpu.json")
    hybrid = next((_json(p) for p in sorted(out.glob("l_*x*.json"))), None)
    if single and hybrid:
        rel = max(abs(a - b) / abs(a) for a, b in zip(single["losses"], hybrid["losses"]))
        print(f"loss, ~1B model, {len(single['losses'])} steps: 1 GPU vs mesh {hybrid['mesh']}: max rel diff {rel:.5f} "
              f"-> {'MATCH' if rel < 0.02 else 'MISMATCH'} (bar 2%)")
    else:
        print(f"loss check missing: {_err(out / 'l_1gpu.log')}")


def single(out: Path) -> None:
    """`bench/single.sh`: the per-rank checkpoint stall, the GPU tests, and where a slice's step time goes."""
    print(f"== one GPU ({out}) ==")
    _checkpoint(out)
    print(f"\n[gpu tests] {_err(out / 'pytest_gpu.log')}")
    for p in sorted(out.glob("p_*.json")):
        r = _json(p)
        print(f"\n[profile] {r['name']}: {r['shape']} mesh {r['mesh']} micro {r['micro']} acc {r['acc']} compile "
              f"{r['compile']}, {_levers(r)}, reshard {r['reshard_after_forward']} reduce {r['reduce_dtype']} "
              f"cap {r.get('mem_cap_gib') or 'none'}: "
              f"{r['tok_s_per_gpu']:,.0f} tok/s, MFU {_pct(r['mfu'])}, {r['peak_mem_gib'] or 0:.1f} GiB "
              f"(reserved {r.get('peak_reserved_gib') or 0:.1f})")
        txt = p.with_name(p.stem + ".kernels.txt")
        print(txt.read_text().rstrip() if txt.is_file() else "  (no kernel profile: CPU run)")
    for p in sorted(out.glob("p_*.log")):
        if not p.with_suffix(".json").is_file():
            print(f"\n[profile] {p.stem} failed: {_err(p)}")
    _anchor_beside(out, "a_half", "p_half*.json", "one rank")
    _anchor_beside(out, "a_mesh", "p_mesh_*.json", "REPL=1 SHARD=2")


def _anchor_beside(out: Path, name: str, runs: str, where: str) -> None:
    """The anchor run `name` of a `single.sh` phase, with each engine run matching `runs` as a ratio to it."""
    engines, anchor = [_json(p) for p in sorted(out.glob(runs))], _anchor(out, name)
    if anchor:
        ratio = "".join(f", {r['name']} {r['tok_s_per_gpu'] / anchor['tok_s_per_gpu']:.2f}× the anchor" for r in engines)
        print(f"\n[anchor] anchor_fsdp.py {where}, {anchor.get('layers', '?')} layers, micro {anchor['micro']} acc "
              f"{anchor['acc']}: {anchor['tok_s_per_gpu']:,} tok/s/GPU, MFU {_pct(anchor.get('mfu_989'))}, "
              f"{anchor.get('peak_mem_gib', 0)} GiB{ratio}")
    elif (out / f"{name}.log").is_file():
        print(f"\n[anchor] {name} failed: {_err(out / (name + '.log'))}")

def _smoothed(xs: list[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing), to compare two noisy loss curves."""
    out, acc = [], xs[0]
    for x in xs:
        acc = alpha * x + (1 - alpha) * acc
        out.append(acc)
    return out


def _bench_row(r: dict | None, name: str, out: Path, base: dict | None = None) -> str:
    """A table row of a `bench_pretrain.py` run (its JSON), with its ratio to `base`; its error when it failed."""
    if not r:
        return f"| {name} | failed: {_err(out / (name + '.log'))} | | | | |"
    ratio = f"{r['tok_s_per_gpu'] / base['tok_s_per_gpu']:.3f}×" if base else ""
    return (f"| {name} | {r['shape']} micro {r['micro']} acc {r['acc']}, {_levers(r)} | {r['tok_s_per_gpu']:,.0f} | "
            f"{_pct(r['mfu'])} | {r['peak_mem_gib'] or 0:.1f} / {r.get('peak_reserved_gib') or 0:.1f} | {ratio} |")


def titan(out: Path) -> None:
    """`bench/titan.sh`: the CLI vs torchtitan 0.3.0, FP8 speed and loss, xformers vs cuDNN, the 80 GiB setting × 3."""
    import statistics

    print(f"== issue 26 on one GPU ({out}) ==")
    print(_err(out / "pytest_fp8.log") if (out / "pytest_fp8.log").is_file() else "[tests] not run")
    settings = (out / "titan.settings").read_text().strip() if (out / "titan.settings").is_file() else "?"
    print(f"\n[titan] {settings}")
    print("| run | tok/s/GPU | MFU (6N + 12LdS, 989 TFLOP/s) | peak GiB (allocated / reserved) | × torchtitan |")
    print("| --- | ---: | ---: | ---: | ---: |")
    anchor = _anchor(out, "titan")
    card = _cli(out, "cli_card", world=1, skip_last=True) if (out / "cli_card.log").is_file() else None
    if card:
        ratio = f"{card['tok_s'] / anchor['tok_s_per_gpu']:.3f}×" if anchor else "n/a"
        mem = f"{card['mem']:.1f}" if card["mem"] is not None else "n/a"
        print(f"| biomed-llama pretrain, {_settings(out, 'cli_card')} ({card['from']}) | {card['tok_s']:,.0f} | "
              f"{_pct(card['mfu'])} | {mem} | {ratio} |")
    elif (out / "cli_card.log").is_file():
        print(f"| biomed-llama pretrain | failed: {_err(out / 'cli_card.log')} | | | |")
    if anchor:
        print(f"| torchtitan {anchor['torchtitan']}, {anchor['layers']} layers, micro {anchor['micro']} acc "
              f"{anchor['acc']}, AC {anchor['ac']}, {anchor['attention']}, CUDA graphs {anchor['cuda_graphs']}, reshard "
              f"{anchor.get('reshard_after_forward')}, loss {anchor.get('loss', 'chunked')}"
              f"{' (norm/LM-head group mended)' if anchor.get('fsdp_group_mend') else ''}, SPMD {anchor.get('spmd_backend')} "
              f"({anchor['steps_timed']} steps timed) | {anchor['tok_s_per_gpu']:,.0f} | {_pct(anchor['mfu'])} | "
              f"{anchor['peak_mem_gib']:.1f} / {anchor['peak_reserved_gib']:.1f} | 1.000× |")
    elif (out / "titan.log").is_file():
        print(f"| torchtitan | failed: {_err(out / 'titan.log')} | | | |")
    if anchor and (anchor.get("torch_compat") or "stand-in" in anchor.get("datasets", "")):
        print(f"torchtitan ran with: {anchor.get('torch_compat') or ''} {anchor.get('datasets', '')}, "
              f"SPMD backend {anchor.get('spmd_backend')}")
    if (out / "titan_first.log").is_file():
        print(f"torchtitan's first try (its defaults) failed: {_err(out / 'titan_first.log')}")
    if card and anchor:
        print(f"target >= 1.10x torchtitan: {'PASS' if card['tok_s'] >= 1.10 * anchor['tok_s_per_gpu'] else 'FAIL'}")
    print("\n[fp8] 7B 8-layer slice, bf16 vs pretrain.float8 (MFU in bf16-equivalent FLOPs)")
    print("| run | settings | tok/s/GPU | MFU | peak GiB | × bf16 |\n| --- | --- | ---: | ---: | ---: | ---: |")
    bf16 = _json(out / "f_bf16.json")
    for p in [out / "f_bf16.log", *sorted(q for q in out.glob("f_*.log") if q.stem != "f_bf16")]:
        if p.is_file():
            print(_bench_row(_json(p.with_suffix(".json")), p.stem, out, bf16 if p.stem != "f_bf16" else None))
    old, new = _json(out / "l_bf16.json"), _json(out / "l_fp8.json")
    if old and new:
        a, b = _smoothed(old["losses"]), _smoothed(new["losses"])
        rel = [abs(x - y) / abs(x) for x, y in zip(a, b)]
        print(f"[fp8 loss] {len(rel)} steps, same data and init, smoothed (EMA 0.1): max relative difference "
              f"{max(rel):.4f} (at step {rel.index(max(rel)) + 1}), last {a[-1]:.4f} vs {b[-1]:.4f} -> "
              f"{'WITHIN' if max(rel) <= 0.01 else 'OUTSIDE'} 1%")
        print("    bf16:", " ".join(f"{v:.3f}" for v in old["losses"][::20]))
        print("    fp8 :", " ".join(f"{v:.3f}" for v in new["losses"][::20]))
    elif (out / "l_bf16.log").is_file():
        missing = [f"{n}: {_err(out / f'l_{n}.log')}" for n, r in (("bf16", old), ("fp8", new)) if not r]
        print(f"[fp8 loss] missing: {'; '.join(missing)}")
    att = _json(out / "attention.json")
    if att:
        print("\n[attention kernels] causal fwd+bwd ms, bf16,", att["shape"])
        for r in att["rows"]:
            print(f"    {r['backend']:<16} " + (f"{r['fwd_bwd_ms']:.3f} ms" if "fwd_bwd_ms" in r else r.get("error", "")))
    cudnn = _json(out / "a_cudnn.json")
    if (out / "a_cudnn.log").is_file():
        print("\n[attention in training] the engine, same batch, bf16, compile")
        print("| run | settings | tok/s/GPU | MFU | peak GiB | × cuDNN |\n| --- | --- | ---: | ---: | ---: | ---: |")
        print(_bench_row(cudnn, "a_cudnn", out))
        if (out / "a_xformers.log").is_file():
            xf = _json(out / "a_xformers.json")
            print(_bench_row(xf, "a_xformers", out, cudnn))
            if xf and cudnn:
                gap = 1 - xf["tok_s_per_gpu"] / cudnn["tok_s_per_gpu"]
                print(f"xformers costs {100 * gap:.1f}% of cuDNN's throughput: target within 3%: "
                      f"{'PASS' if gap <= 0.03 else 'FAIL'}")
    caps = [(p.stem, _json(p.with_suffix(".json"))) for p in sorted(out.glob("c80_*.log"))]
    if caps:
        print("\n[80 GiB x 3] one GPU emulating a GPU of 1x2 (16-layer 7B), the profile's 80 GiB levers, capped")
        print("| run | settings | tok/s/GPU | MFU | peak GiB | |\n| --- | --- | ---: | ---: | ---: | --- |")
        for name, r in caps:
            print(_bench_row(r, name, out))
        mfus = [r["mfu"] for _, r in caps if r and r["mfu"] is not None]
        if mfus:
            print(f"MFU over {len(mfus)} runs: min {_pct(min(mfus))}, median {_pct(statistics.median(mfus))}; "
                  f"target min >= 57%: {'PASS' if len(mfus) == 3 and min(mfus) >= 0.57 else 'FAIL'}")


if __name__ == "__main__":
    {"screen": screen, "accept": accept, "scaleout": scaleout, "single": single, "titan": titan}[sys.argv[1]](
        Path(sys.argv[2]))
