"""Flags and subprocess helpers shared by the end-to-end tests."""
import json
import os
import socket
import subprocess
import sys

import torch

from modules.common.io import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# conftest's ``small_set``: 24 training videos (3 optimiser steps per epoch at batch 8) and 4 test videos.
N_TRAIN, N_TEST = 24, 4
# The short run that the fault, resume and interrupt tests start from and compare with (conftest's ``small_run`` and
# ``reference_run``): 2 epochs x 3 steps, a checkpoint after every step, deterministic kernels (exact resume).
REFERENCE = ["--epochs", "2", "--deterministic", "--checkpoint_every", "1"]


def data_flags(folder: str) -> list[str]:
    return ["--datatype", "msrvtt", "--train_csv", os.path.join(folder, "train.csv"),
            "--val_csv", os.path.join(folder, "test.csv"), "--data_path", os.path.join(folder, "data.json"),
            "--features_path", os.path.join(folder, "videos")]


# A run small enough for the CPU tests: tiny CLIP, 4 frames, 16 words, batch 8.
TINY = ["--pretrained_clip_name", "random:tiny", "--max_words", "16", "--max_frames", "4", "--batch_size", "8",
        "--batch_size_val", "16", "--num_thread_reader", "0", "--n_display", "1", "--lr", "1e-3", "--coef_lr", "1",
        "--device", "cpu"]


def tiny_flags(folder: str, output_dir: str) -> list[str]:
    """The synthetic set in ``folder``, ``TINY``, into ``output_dir``."""
    return data_flags(folder) + ["--output_dir", output_dir] + TINY


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick), for one torchrun rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_module(module: str, args: list[str], nproc: int = 1, timeout: float = 300,
               **popen) -> subprocess.CompletedProcess:
    """Run ``python -m module`` (or torchrun with ``nproc`` processes) from the repository root."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(free_port()), "-m", module] + args
    else:
        cmd = [sys.executable, "-m", module] + args
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def read_steps(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "train_steps.jsonl")) as f:
        return [json.loads(line) for line in f]


def msrvtt_layout(synthetic: str, dst: str, n_train: int = 0, n_test: int = 0) -> str:
    """The synthetic set in the folder layout the MSR-VTT scripts expect (``msrvtt_data/MSRVTT_train.9k.csv``,
    ``MSRVTT_JSFUSION_test.csv``, ``MSRVTT_data.json``, ``videos/all/``), keeping the first ``n_train`` training
    videos and ``n_test`` test rows (0: all). Returns ``dst``, the ``DATA_PATH``."""
    annotations = os.path.join(dst, "msrvtt_data")
    os.makedirs(annotations)
    os.makedirs(os.path.join(dst, "videos"))
    for name, target, keep in (("train.csv", "MSRVTT_train.9k.csv", n_train),
                               ("test.csv", "MSRVTT_JSFUSION_test.csv", n_test)):
        with open(os.path.join(synthetic, name), encoding="utf-8") as f:
            lines = f.read().splitlines()
        rows = lines[1:1 + keep] if keep else lines[1:]
        with open(os.path.join(annotations, target), "w", encoding="utf-8") as f:
            f.write("\n".join([lines[0]] + rows) + "\n")
    with open(os.path.join(synthetic, "data.json"), encoding="utf-8") as f:
        data = f.read()
    with open(os.path.join(annotations, "MSRVTT_data.json"), "w", encoding="utf-8") as f:
        f.write(data)
    os.symlink(os.path.join(synthetic, "videos"), os.path.join(dst, "videos", "all"))
    return dst


# What the shell scripts read from the environment: a test sets what it needs and inherits none of them.
SCRIPT_KNOBS = ("CKPT", "DATA_PATH", "OUTPUT_DIR", "ANNOTATIONS", "VIDEOS", "SK_BANK_SIZE", "DIRECTION", "NGPU",
                "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "DRY_RUN")


def script_env(**env: str) -> dict:
    """This environment without the scripts' knobs, plus ``env``; the tests' Python, one thread, and a free port for
    torchrun (test workers and other test sessions may share the machine)."""
    base = {k: v for k, v in os.environ.items() if k not in SCRIPT_KNOBS and not k.startswith("DEMO_")}
    return dict(base, PYTHON=sys.executable, OMP_NUM_THREADS="1", MASTER_PORT=str(free_port()), **env)


def run_script(script: str, args: list[str], env: dict, cwd: str = ROOT, timeout: float = 300):
    """``sh script args`` under ``script_env(**env)``."""
    return subprocess.run(["sh", script] + args, cwd=cwd, env=script_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def same_run(a: str, b: str) -> None:
    """Two run folders of ``REFERENCE`` runs end with identical weights, optimiser position, validation history and
    step log."""
    ca = read_checkpoint(os.path.join(a, "checkpoints", "last.pth"))
    cb = read_checkpoint(os.path.join(b, "checkpoints", "last.pth"))
    assert ca["global_step"] == cb["global_step"] == 6  # 2 epochs x 3 steps
    for key, value in ca["model"].items():
        assert torch.equal(value, cb["model"][key]), key
    assert [h["metrics"] for h in ca["history"]] == [h["metrics"] for h in cb["history"]]
    assert [h["train_loss"] for h in ca["history"]] == [h["train_loss"] for h in cb["history"]]
    assert read_steps(a) == read_steps(b)
