"""Shared test set-up: seeds, two small synthetic video sets and the training runs the tests share, each made once
per session and test worker (pyproject.toml puts the repository root on the import path).

The suite runs in parallel test workers (pytest-xdist, ``-n auto`` in pyproject.toml): one per available CPU, at most
``MAX_WORKERS``, each computing with one thread so that the workers do not oversubscribe the cores. ``-n 0`` runs
everything in this process (for a debugger)."""
import logging
import os

import pytest
import torch

# More workers each build their own session runs and start multi-process runs of their own: little gain beyond this.
MAX_WORKERS = 4

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: the CPUs this process may use, at most ``MAX_WORKERS``."""
    from modules.common.runtime import available_cpus

    return max(1, min(MAX_WORKERS, available_cpus()))


def _detach_run_handlers() -> None:
    """An in-process run attaches its log handlers to the root logger; a later case must not write into them."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_ucofia", False)]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """In-process runs share two cores with other work: one thread avoids oversubscription, and the results of
    in-process runs compared bit for bit depend on the thread count (subprocesses get OMP_NUM_THREADS=1 from
    ``helpers.run_module``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def detach_run_logging():
    """Each case's in-process runs write their own log files only."""
    yield
    _detach_run_handlers()


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> str:
    """32 training and 12 test videos in the MSR-VTT layout (generated once per test session)."""
    from modules.data.synthetic import generate

    folder = str(tmp_path_factory.mktemp("synthetic"))
    generate(folder, n_train=32, n_test=12, seed=0)
    return folder


@pytest.fixture(scope="session")
def trained_run(synthetic_set, tmp_path_factory) -> str:
    """The output folder of a one-epoch training run on ``synthetic_set`` (tiny CLIP, 4 steps of 8 videos): a
    checkpoint with saved settings, train_steps.jsonl, history.json and config.json."""
    from helpers import tiny_flags

    from train.main import main as train_main

    out = str(tmp_path_factory.mktemp("trained_run"))
    try:
        assert train_main(tiny_flags(synthetic_set, out) + ["--epochs", "1"]) == 0
    finally:
        _detach_run_handlers()
    return out


@pytest.fixture(scope="session")
def small_set(tmp_path_factory) -> str:
    """24 training videos (3 optimiser steps of batch 8) and 4 test videos: the set of the fault and run tests."""
    from helpers import N_TEST, N_TRAIN

    from modules.data.synthetic import generate

    folder = str(tmp_path_factory.mktemp("small_set"))
    generate(folder, n_train=N_TRAIN, n_test=N_TEST, seed=0)
    return folder


@pytest.fixture(scope="session")
def small_run(small_set, tmp_path_factory) -> str:
    """The ``REFERENCE`` run on ``small_set``, in this process with one thread (as the in-process runs compared
    with it): 2 epochs x 3 steps, checkpoints/last.pth after every step, best.pth after epoch 1 or 2."""
    from helpers import REFERENCE, tiny_flags

    from train.main import main as train_main

    out = str(tmp_path_factory.mktemp("small_run"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(tiny_flags(small_set, out) + REFERENCE) == 0
    finally:
        torch.set_num_threads(before)
        _detach_run_handlers()
    return out


@pytest.fixture(scope="session")
def reference_run(small_set, tmp_path_factory) -> str:
    """The ``REFERENCE`` run on ``small_set`` in a subprocess, like the interrupted runs it is compared with."""
    from helpers import REFERENCE, run_module, tiny_flags

    out = str(tmp_path_factory.mktemp("reference_run"))
    r = run_module("train.main", tiny_flags(small_set, out) + REFERENCE)
    assert r.returncode == 0, r.stderr[-3000:]
    return out
