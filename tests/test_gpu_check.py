"""The GPU check (``scripts/gpu_check.sh``): every step at tiny sizes on the CPU, every figure in its JSON file, a
failing step named in one line, and the peak-throughput table the FLOP utilisation divides by."""
import json
import os
import subprocess

import pytest
import torch
from helpers import ROOT

from scripts.benchlib import peak_tflops
from scripts.gpu_check import FIGURES, STEPS, lookup, summary


def check(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2")
    return subprocess.run(["sh", os.path.join(ROOT, "scripts", "gpu_check.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_every_step_runs_at_tiny_sizes_and_writes_every_figure(tmp_path):
    out = tmp_path / "check"
    r = check(["--device", "cpu", "--tiny", "--out", str(out)], timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(out / "gpu_check.json") as f:
        figures = json.load(f)
    for path in FIGURES:
        lookup(figures, path)                                   # KeyError names a missing figure
    assert figures["gpu_check"]["status"] == "passed"
    assert [(n, s["status"]) for n, s in figures["steps"].items()] == [(n, "passed") for n in STEPS]
    assert figures["cuda_tests"]["skipped"] >= 4 and figures["cuda_tests"]["passed"] == 0   # no GPU here
    for mode in ("fp32", "bf16", "legacy_fp16"):
        row = figures["train_step"][mode]
        assert row["clips_per_s"] > 0 and row["peak_mib"] > 0 and row["mfu"] is None       # no peak for a CPU
        assert row["max_batch"]["clips"] == 3 and row["max_batch"]["limited"]
    assert figures["sk_bank"]["bank_device"] == ["cpu"] and figures["sk_bank"]["seconds_total"] > 0
    e = figures["train_eval"]
    assert [x["epoch"] for x in e["epochs"]] == [1, 2] and e["gpu_utilisation_sampler"] is None
    assert e["frame_cache_used"] == os.path.exists(os.path.join(ROOT, "scripts", "cache_frames.py"))
    assert all(e["phases"][p]["seconds"] > 0 for p in ("make_synthetic", "train", "eval_t2v", "eval_v2t"))
    assert figures["train_step_variants"]["bf16_multi_tensor"]["status"] == "measured"
    text = (out / "summary.md").read_text()
    assert text.startswith("# GPU check: passed") and "| legacy_fp16 |" in text


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_check_stops_at_its_first_step_with_one_line(tmp_path):
    out = tmp_path / "check"
    r = check(["--out", str(out)], timeout=300)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("gpu_check: step")]
    assert len(lines) == 1 and lines[0].startswith("gpu_check: step environment failed: --device cuda but torch")
    with open(out / "gpu_check.json") as f:
        figures = json.load(f)
    assert figures["gpu_check"]["failed_step"] == "environment" and list(figures["steps"]) == ["environment"]
    assert "Stopped at step `environment`" in (out / "summary.md").read_text()


def test_peak_throughput_by_gpu_name():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 67.0
    assert peak_tflops("NVIDIA H100 PCIe", "legacy_fp16") == 756.0
    assert peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None and peak_tflops("cpu, 2 threads", "fp32") is None


def test_summary_reads_a_partial_run():
    """A check stopped after its first steps still gives a readable summary (figures of later steps absent)."""
    figures = {"gpu_check": {"status": "failed", "tiny": False, "failed_step": "train_step", "message": "out of time",
                             "seconds_total": 12.0},
               "steps": {"environment": {"status": "passed", "seconds": 1.0, "budget_s": 30}},
               "environment": {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.x", "cuda": "12.x", "cudnn": 1,
                               "driver": None},
               "cuda_tests": {"passed": 5, "failed": 0, "skipped": 0}}
    text = summary(figures)
    assert "Stopped at step `train_step`: out of time" in text and "CUDA tests: 5 passed" in text
    with pytest.raises(KeyError):
        lookup(figures, "train_step.fp32.mfu")
