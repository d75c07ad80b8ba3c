"""Shared test set-up: seeds, a small synthetic video set and one short training run (pyproject.toml puts the
repository root on the import path)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


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
    assert train_main(tiny_flags(synthetic_set, out) + ["--epochs", "1"]) == 0
    return out
