"""The GPU check: every measurement of the CUDA path in one run, figures in one JSON file and a readable summary.

    sh scripts/gpu_check.sh                      # one GPU, at most 8 minutes
    sh scripts/gpu_check.sh --device cpu --tiny  # the same steps at tiny sizes on the CPU (what the tests run)

Steps, in order (``STEPS``), each in its own processes with a time budget; the first that fails stops the check with
one line naming it, and what was measured until then stays in the JSON file:

1. environment: versions of Python, torch, CUDA, cuDNN, the GPU's name, memory and driver; CUDA must be present.
2. cuda_tests: ``pytest -m cuda tests/test_cuda.py`` (GPU against CPU; all skipped without a GPU).
3. train_step: ``scripts/bench_train_step.py`` in fp32, bf16 and legacy_fp16 at 32 clips and at the largest batch
   that fits: clips/s, peak memory, model FLOP utilisation.
4. sk_bank: ``scripts/bench_eval.py --bank 180000``: seconds per stage, peak memory, where the bank was kept.
5. train_eval: the synthetic set, its frame cache where ``scripts/cache_frames.py`` exists, a two-epoch training
   through ``torchrun --nproc_per_node 1``, then both evaluations: wall time and GPU utilisation per phase, and the
   share of each epoch spent waiting for data.
6. train_step_variants: bf16 with the multi-tensor BertAdam, then also compiled (``--compile``; on the CPU the
   compiled variant is left out: it needs a C++ toolchain and minutes of compiling).

Writes ``OUT/gpu_check.json``, ``OUT/summary.md`` and ``OUT/logs/<step>.log`` (each command's output).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_BUDGET_S = {"full": 480, "tiny": 600}  # tiny: 4 minutes measured on two cores shared with other work
# Seconds each step may take at most (full sizes, tiny sizes); the check's total budget caps them further.
BUDGETS = {"environment": (30, 60), "cuda_tests": (100, 90), "train_step": (170, 200), "sk_bank": (80, 90),
           "train_eval": (170, 240), "train_step_variants": (120, 120)}
STEPS = tuple(BUDGETS)
SIZES = {
    "full": dict(arch="ViT-B/32", clip="random:ViT-B/32", frames=12, words=32, clips=32, steps=5, batch_limit=1024,
                 bank=180000, videos=1000, texts=1000, chunk=2000, n_train=192, n_test=48, batch=32, batch_val=64,
                 workers=8),
    "tiny": dict(arch="tiny", clip="random:tiny", frames=2, words=8, clips=2, steps=1, batch_limit=3,
                 bank=200, videos=20, texts=20, chunk=100, n_train=16, n_test=6, batch=8, batch_val=8, workers=1),
}
# Every figure the JSON file holds (dotted paths); a figure that does not apply (no GPU) is null, never left out.
MODES = ("fp32", "bf16", "legacy_fp16")
PER_MODE = ("clips", "clips_per_s", "seconds", "peak_mib", "tflops", "peak_tflops", "mfu")
FIGURES = (
    ["environment.python", "environment.torch", "environment.cuda", "environment.cudnn", "environment.gpu",
     "environment.gpu_memory_gib", "environment.driver", "cuda_tests.passed", "cuda_tests.failed",
     "cuda_tests.skipped", "train_step.bf16_over_legacy_fp16", "train_step.bf16_mfu_at_least_35pct",
     "sk_bank.seconds_total", "sk_bank.seconds_bank", "sk_bank.seconds_sinkhorn", "sk_bank.peak_gib",
     "sk_bank.bank_device", "sk_bank.under_60_s", "train_eval.frame_cache_used", "train_eval.precision",
     "train_eval.epochs", "train_eval.gpu_utilisation_sampler"]
    + [f"train_step.{m}.{k}" for m in MODES for k in PER_MODE]
    + [f"train_step.{m}.max_batch.{k}" for m in MODES for k in PER_MODE + ("limited",)]
    + [f"train_step_variants.{v}.{k}" for v in ("bf16_multi_tensor", "bf16_multi_tensor_compiled")
       for k in ("clips_per_s", "peak_mib", "mfu", "status")]
    + [f"train_eval.phases.{p}.{k}" for p in ("make_synthetic", "cache_frames", "train", "eval_t2v", "eval_v2t")
       for k in ("seconds", "gpu_util_mean", "gpu_util_min", "gpu_samples")]
)


class StepFailed(Exception):
    pass


class Check:
    """The run: output folder, sizes, deadline, the figures so far (written after every step)."""

    def __init__(self, out: str, device: str, tiny: bool):
        self.out, self.device, self.tiny = out, device, tiny
        self.size = SIZES["tiny" if tiny else "full"]
        self.started = time.monotonic()
        self.deadline = self.started + TOTAL_BUDGET_S["tiny" if tiny else "full"]
        self.figures: dict = {"gpu_check": {"device": device, "tiny": tiny, "status": "running",
                                            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                              "steps": {}}
        self.step_deadline = self.deadline
        os.makedirs(os.path.join(out, "logs"), exist_ok=True)

    def env(self) -> dict:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the --deterministic tests
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def run(self, name: str, cmd: list[str], log: str) -> str:
        """Run ``cmd`` from the repository root within the step's time left; its output goes to ``logs/<log>.log``
        and is returned. A non-zero exit or the end of the budget raises ``StepFailed`` with the command's last
        error line."""
        left = self.step_deadline - time.monotonic()
        if left <= 1:
            raise StepFailed("no time left in its budget")
        path = os.path.join(self.out, "logs", f"{log}.log")
        with open(path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            # A session of its own: at the end of the budget the command goes with everything it started
            # (torchrun's workers, DataLoader workers), not only the direct child.
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                stop_group(proc)
                raise StepFailed(f"{name} ran out of the step's time budget (see {path})") from None
            except BaseException:
                stop_group(proc)
                raise
        with open(path) as f:
            text = f.read()
        if code:
            raise StepFailed(f"{name} exited with status {code}: {last_error(text)} (see {path})")
        return text

    def python(self, name: str, args: list[str], log: str) -> str:
        return self.run(name, [sys.executable, *args], log)

    def write(self) -> None:
        self.figures["gpu_check"]["seconds_total"] = round(time.monotonic() - self.started, 1)
        with open(os.path.join(self.out, "gpu_check.json"), "w") as f:
            json.dump(self.figures, f, indent=1)
        with open(os.path.join(self.out, "summary.md"), "w") as f:
            f.write(summary(self.figures))


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, SIGKILL ten seconds later if it is still there."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_error(text: str) -> str:
    """The most telling line of a failed command's output: its ``error:`` line, a failed test, or its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("error:", "stopped:", "FAILED", "E   "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1][:300]
    return lines[-1][:300] if lines else "no output"


# ----------------------------------------------------------------------------------------------------- steps

ENV_PROBE = r"""
import json, platform, torch
out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
       "cuda_available": torch.cuda.is_available(), "gpu": None, "gpu_count": torch.cuda.device_count(),
       "gpu_memory_gib": None, "capability": None}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), capability=f"{p.major}.{p.minor}")
print(json.dumps(out))
"""


def environment(c: Check) -> dict:
    """Versions and the GPU, probed in a child process (this one never holds GPU memory)."""
    info = json.loads(c.python("the environment probe", ["-c", ENV_PROBE], "environment").strip().splitlines()[-1])
    if c.device == "cuda" and not info["cuda_available"]:
        raise StepFailed(f"--device cuda but torch {info['torch']} (CUDA {info['cuda']}) sees no CUDA device")
    info["driver"] = nvidia_smi("driver_version") if c.device == "cuda" else None
    from benchlib import peak_tflops

    info["peak_tflops"] = {m: peak_tflops(info["gpu"], m) for m in MODES} if info["gpu"] else None
    return info


def nvidia_smi(field: str) -> Optional[str]:
    """One field of ``nvidia-smi --query-gpu`` for the first visible GPU, or None where it cannot be read."""
    if not shutil.which("nvidia-smi"):
        return None
    index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", index],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None


def cuda_tests(c: Check) -> dict:
    xml = os.path.join(c.out, "cuda_tests.xml")
    c.python("pytest -m cuda", ["-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-n", "0",
                                f"--junitxml={xml}"], "cuda_tests")
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    result = {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
              "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"]}
    if c.device == "cuda" and (result["skipped"] or not result["passed"]):
        raise StepFailed(f"{result['skipped']} CUDA test(s) skipped on a GPU: the tests do not see it")
    return result


def bench_train(c: Check, log: str, extra: list[str]) -> dict:
    s = c.size
    path = os.path.join(c.out, f"{log}.json")
    c.python("bench_train_step.py", ["scripts/bench_train_step.py", "--arch", s["arch"], "--clips", str(s["clips"]),
                                     "--frames", str(s["frames"]), "--words", str(s["words"]), "--steps",
                                     str(s["steps"]), "--device", c.device, "--json", path, *extra], log)
    with open(path) as f:
        return json.load(f)


def train_step(c: Check) -> dict:
    report = bench_train(c, "train_step", ["--find_max_batch", "--batch_limit", str(c.size["batch_limit"])])
    if report["failed"]:
        raise StepFailed(f"bench_train_step.py: {', '.join(report['failed'])} failed")
    out = {m: {k: v for k, v in report["modes"][m].items() if k in PER_MODE + ("max_batch", "flops_per_step")}
           for m in MODES}
    bf16, legacy = out["bf16"], out["legacy_fp16"]
    out["bf16_over_legacy_fp16"] = bf16["clips_per_s"] / legacy["clips_per_s"]
    out["bf16_mfu_at_least_35pct"] = None if bf16["mfu"] is None else bf16["mfu"] >= 0.35
    return out


def sk_bank(c: Check) -> dict:
    s, path = c.size, os.path.join(c.out, "sk_bank.json")
    c.python("bench_eval.py", ["scripts/bench_eval.py", "--bank", str(s["bank"]), "--videos", str(s["videos"]),
                               "--texts", str(s["texts"]), "--chunk", str(s["chunk"]), "--device", c.device,
                               "--json", path], "sk_bank")
    with open(path) as f:
        out = json.load(f)
    if any(not d.startswith(c.device) for d in out["bank_device"]):
        raise StepFailed(f"bank similarities were kept on {out['bank_device']}, not on {c.device}")
    out["under_60_s"] = out["seconds_total"] < 60
    return out


def train_step_variants(c: Check) -> dict:
    variants = {"bf16_multi_tensor": ["--optimizer_impl", "multi_tensor"],
                "bf16_multi_tensor_compiled": ["--optimizer_impl", "multi_tensor", "--compile"]}
    out = {}
    for name, flags in variants.items():
        if "--compile" in flags and c.device == "cpu":
            out[name] = {"status": "not run on the CPU", "clips_per_s": None, "peak_mib": None, "mfu": None}
            continue
        row = bench_train(c, name, ["--modes", "bf16", *flags])["modes"].get("bf16")
        if row is None:
            raise StepFailed(f"bench_train_step.py {' '.join(flags)} failed")
        out[name] = {"status": "measured", **{k: row[k] for k in PER_MODE}}
    return out


class UtilisationSampler(threading.Thread):
    """GPU utilisation (percent of time a kernel ran) every half second, from ``nvidia-smi`` or, without it,
    ``torch.cuda.utilization`` (pynvml); nothing on the CPU."""

    def __init__(self, device: str):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.source = None
        if device == "cuda":
            if nvidia_smi("utilization.gpu") is not None:
                self.source = "nvidia-smi"
            else:
                try:
                    import torch

                    torch.cuda.utilization()
                    self.source = "torch.cuda.utilization"
                except Exception:  # no pynvml, or no NVML: no figure rather than a wrong one
                    self.source = None
        self.stopped = threading.Event()

    def read(self) -> Optional[float]:
        if self.source == "nvidia-smi":
            value = nvidia_smi("utilization.gpu")
            return float(value) if value not in (None, "[N/A]") else None
        import torch

        return float(torch.cuda.utilization())

    def run(self) -> None:
        while self.source and not self.stopped.wait(0.5):
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic(), value))

    def between(self, start: float, end: float) -> dict:
        values = [v for t, v in self.samples if start <= t <= end]
        return {"gpu_util_mean": sum(values) / len(values) if values else None,
                "gpu_util_min": min(values) if values else None, "gpu_samples": len(values)}


EPOCH_LINE = re.compile(r"epoch (\d+): mean loss ([\d.naif+-]+), ([\d.]+) clips/s, (\d+)% of the time waiting")


def train_eval(c: Check) -> dict:
    s, work = c.size, os.path.join(c.out, "train_eval")
    shutil.rmtree(work, ignore_errors=True)
    data, run_dir = os.path.join(work, "data"), os.path.join(work, "run")
    flags = ["--datatype", "msrvtt", "--train_csv", os.path.join(data, "train.csv"), "--val_csv",
             os.path.join(data, "test.csv"), "--data_path", os.path.join(data, "data.json"), "--features_path",
             os.path.join(data, "videos"), "--max_words", str(s["words"]), "--max_frames", str(s["frames"])]
    cache = os.path.exists(os.path.join(ROOT, "scripts", "cache_frames.py"))
    loader = ["--num_thread_reader", str(s["workers"]), "--batch_size_val", str(s["batch_val"]), "--device", c.device]
    loader += ["--frame_cache", os.path.join(work, "frame_cache")] if cache else []
    precision = "bf16" if c.device == "cuda" else "fp32"
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"]
    phases = {
        "make_synthetic": ["scripts/make_synthetic.py", "--out", data, "--train", str(s["n_train"]), "--test",
                           str(s["n_test"])],
        "cache_frames": ["scripts/cache_frames.py", *flags, "--frame_cache", os.path.join(work, "frame_cache")],
        "train": [*torchrun, "train.main", *flags, *loader, "--output_dir", run_dir, "--pretrained_clip_name",
                  s["clip"], "--epochs", "2", "--batch_size", str(s["batch"]), "--precision", precision],
        **{f"eval_{d}": [*torchrun, f"eval_{d}.main", *flags, *loader, "--output_dir", os.path.join(work, d),
                         "--init_model", os.path.join(run_dir, "checkpoints", "last.pth"), "--precision", precision]
           for d in ("t2v", "v2t")},
    }
    sampler = UtilisationSampler(c.device)
    sampler.start()
    out: dict = {"frame_cache_used": cache, "precision": precision, "gpu_utilisation_sampler": sampler.source,
                 "phases": {}}
    try:
        for phase, args in phases.items():
            if phase == "cache_frames" and not cache:
                out["phases"][phase] = {"seconds": None, "gpu_util_mean": None, "gpu_util_min": None,
                                        "gpu_samples": 0, "note": "scripts/cache_frames.py is not in this checkout"}
                continue
            start = time.monotonic()
            text = c.python(phase, args, "train_eval")
            end = time.monotonic()
            out["phases"][phase] = {"seconds": round(end - start, 2), **sampler.between(start, end)}
            if phase == "train":
                out["epochs"] = [{"epoch": int(m[1]), "mean_loss": float(m[2]), "clips_per_s": float(m[3]),
                                  "waiting_for_data_pct": int(m[4])} for m in EPOCH_LINE.finditer(text)]
                if len(out["epochs"]) != 2:
                    raise StepFailed("the training log does not show two finished epochs")
    finally:
        sampler.stopped.set()
    for d in ("t2v", "v2t"):
        with open(os.path.join(work, d, f"results_{d}.json")) as f:
            res = json.load(f)
        out[f"results_{d}"] = {"R1_sk_norm": res["metrics"]["sk_norm"]["R1"], "seconds": res["seconds"]}
    return out


# --------------------------------------------------------------------------------------------------- summary

def lookup(figures: dict, path: str):
    value = figures
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def fmt(value, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value * scale:,.{digits}f}{unit}" if isinstance(value, (int, float)) else str(value)


def summary(f: dict) -> str:
    g, env = f["gpu_check"], f.get("environment", {})
    lines = [f"# GPU check: {g['status']}", "",
             f"{env.get('gpu') or 'CPU'}; torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
             f"driver {env.get('driver')}; {'tiny sizes' if g['tiny'] else 'full sizes'}, "
             f"{g.get('seconds_total')} s in all.", ""]
    if g["status"] == "failed":
        lines += [f"**Stopped at step `{g['failed_step']}`: {g['message']}**", ""]
    lines += ["| step | status | seconds | budget |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['status']} | {s.get('seconds', '–')} | {s['budget_s']} |" for n, s in f["steps"].items()]
    if "cuda_tests" in f:
        t = f["cuda_tests"]
        lines += ["", f"CUDA tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped."]
    if "train_step" in f:
        t = f["train_step"]
        lines += ["", "Training step (clips/s, peak MiB, model FLOP utilisation):", "",
                  "| precision | clips | clips/s | peak MiB | TFLOP/s | MFU | largest batch | clips/s | peak MiB "
                  "| MFU |", "|---|---|---|---|---|---|---|---|---|---|"]
        for m in MODES:
            r, b = t[m], t[m]["max_batch"]
            lines.append(f"| {m} | {r['clips']} | {fmt(r['clips_per_s'])} | {fmt(r['peak_mib'], 0)} | "
                         f"{fmt(r['tflops'], 2)} | {fmt(r['mfu'], 1, 100, '%')} | {b['clips']}"
                         f"{' (limit)' if b['limited'] else ''} | {fmt(b['clips_per_s'])} | {fmt(b['peak_mib'], 0)} | "
                         f"{fmt(b['mfu'], 1, 100, '%')} |")
        lines += ["", f"bf16 / legacy_fp16 speed: {fmt(t['bf16_over_legacy_fp16'], 2)}x; bf16 at least 35% FLOP "
                  f"utilisation: {fmt(t['bf16_mfu_at_least_35pct'])}."]
    if "sk_bank" in f:
        b = f["sk_bank"]
        lines += ["", f"SK bank {b['bank']:,} x {b['videos']:,}: {fmt(b['seconds_total'])} s (bank "
                  f"{fmt(b['seconds_bank'])} s, Sinkhorn {fmt(b['seconds_sinkhorn'], 2)} s), peak "
                  f"{fmt(b['peak_gib'], 2)} GiB, bank on {', '.join(b['bank_device'])}; under 60 s: "
                  f"{fmt(b['under_60_s'])}."]
    if "train_eval" in f:
        e = f["train_eval"]
        lines += ["", f"Two-epoch training and both evaluations ({e['precision']}, frame cache "
                  f"{'used' if e['frame_cache_used'] else 'not available'}, GPU utilisation from "
                  f"{e['gpu_utilisation_sampler'] or 'nowhere'}):", "",
                  "| phase | seconds | GPU utilisation mean | min |", "|---|---|---|---|"]
        lines += [f"| {p} | {fmt(v['seconds'])} | {fmt(v['gpu_util_mean'], 0, 1, '%')} | "
                  f"{fmt(v['gpu_util_min'], 0, 1, '%')} |" for p, v in e["phases"].items()]
        lines += [""] + [f"Epoch {x['epoch']}: {x['clips_per_s']} clips/s, {x['waiting_for_data_pct']}% of the time "
                         "waiting for data." for x in e.get("epochs", [])]
    if "train_step_variants" in f:
        lines += ["", "bf16 variants at the first batch size of the training step:", ""]
        lines += [f"- {n}: {v['status']}, {fmt(v['clips_per_s'])} clips/s, {fmt(v['peak_mib'], 0)} MiB, MFU "
                  f"{fmt(v['mfu'], 1, 100, '%')}" for n, v in f["train_step_variants"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ main

ACTIONS: dict[str, Callable[[Check], dict]] = {"environment": environment, "cuda_tests": cuda_tests,
                                               "train_step": train_step, "sk_bank": sk_bank,
                                               "train_eval": train_eval, "train_step_variants": train_step_variants}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check", help="output folder (gpu_check.json, summary.md, logs/)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    c = Check(os.path.abspath(args.out), args.device, args.tiny)
    for name in STEPS:
        budget = BUDGETS[name][1 if args.tiny else 0]
        c.step_deadline = min(c.deadline, time.monotonic() + budget)
        record = c.figures["steps"][name] = {"status": "running", "budget_s": budget}
        c.write()
        start = time.monotonic()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            c.figures[name] = ACTIONS[name](c)
        except (StepFailed, OSError, KeyError, ValueError) as e:
            record.update(status="failed", seconds=round(time.monotonic() - start, 1))
            message = str(e) if isinstance(e, StepFailed) else f"{type(e).__name__}: {e}"
            c.figures["gpu_check"].update(status="failed", failed_step=name, message=message)
            c.write()
            print(f"gpu_check: step {name} failed: {message}", file=sys.stderr, flush=True)
            return 1
        record.update(status="passed", seconds=round(time.monotonic() - start, 1))
        c.write()
        print(f"gpu_check: {name} passed in {record['seconds']} s", flush=True)
    c.figures["gpu_check"]["status"] = "passed"
    c.write()
    print(f"gpu_check: all steps passed in {c.figures['gpu_check']['seconds_total']} s; figures in "
          f"{os.path.join(c.out, 'gpu_check.json')}, summary in {os.path.join(c.out, 'summary.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
