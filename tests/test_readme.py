"""The README's training and evaluation blocks, run as written in a fresh copy of the repository.

The blocks are read from README.md itself (the fenced block after each ``<!-- readme-block: NAME ... -->`` marker).
Two things are substituted: the data path (the synthetic set in MSR-VTT's layout) and flags appended to each script
for a tiny run (``random:tiny`` CLIP on the CPU). Everything else (where each command runs, the default ``CKPT``,
where results land and where the summary reads them) is the README's.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, TINY, msrvtt_layout, script_env

from eval_t2v.main import main as eval_t2v
from eval_v2t.main import main as eval_v2t

README_DATA = "/data/MSRVTT"
TRAIN_FLAGS = TINY + ["--batch_size", "16", "--epochs", "1"]
EVAL_FLAGS = ["--batch_size_val", "16", "--num_thread_reader", "0", "--device", "cpu"]
NAMES = {"t2v": "text-to-video", "v2t": "video-to-text"}


def readme_block(name: str) -> str:
    """The fenced block that follows the marker ``<!-- readme-block: name ...-->`` in README.md."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"<!-- readme-block: " + re.escape(name) + r"\b[^>]*-->\n```bash\n(.*?)```", text, re.S)
    assert found, f"README.md has no block marked {name}"
    return found.group(1)


def for_the_test(block: str, data: str, flags: list[str]) -> str:
    """The block with the synthetic set as data and ``flags`` after every shell script it runs."""
    assert README_DATA in block
    block = block.replace(README_DATA, shlex.quote(data))
    return re.sub(r"(\bsh \S+\.sh)", lambda m: m.group(1) + " " + shlex.join(flags), block)


def fresh_copy(dst: str) -> str:
    """The repository's files as a clone has them: no runs, caches, weights or build products."""
    shutil.copytree(ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "outputs", "data_synth", "__pycache__", ".pytest_cache", ".ruff_cache", ".benchmarks",
        "*.egg-info", "build", "*.pt", "*.pth", ".ucofia*"))
    return dst


def summary_rows(out: str) -> dict[str, dict[str, list[str]]]:
    """The summary table's rows per direction: {"t2v": {"raw": ["8.3", ...], ...}, ...}."""
    lines = out.splitlines()
    rows = {}
    for direction, title in NAMES.items():
        at = next(i for i, line in enumerate(lines) if line.startswith(title + " ("))
        rows[direction] = {line.split()[0]: line.split()[1:] for line in lines[at + 1:at + 4]}
    return rows


@pytest.mark.slow
def test_readme_train_evaluate_summarise(synthetic_set, tmp_path):
    repo = fresh_copy(str(tmp_path / "repo"))
    data = msrvtt_layout(synthetic_set, str(tmp_path / "MSRVTT"), n_train=8, n_test=6)
    script = "set -e\n" + for_the_test(readme_block("training"), data, TRAIN_FLAGS) \
        + for_the_test(readme_block("evaluation"), data, EVAL_FLAGS)
    # `python` in the README is the interpreter running the tests; NGPU=1 spares the scripts a GPU probe
    env = script_env(NGPU="1", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    run = subprocess.run(["sh", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    checkpoint = os.path.join(repo, "train", "runs", "msrvtt", "checkpoints", "best.pth")
    assert os.path.isfile(checkpoint)  # where the training block writes and the eval scripts look by default
    written = os.path.join(repo, "runs", "msrvtt_eval")

    # the same checkpoint and data through the entry points directly, with no model flags either
    annotations = os.path.join(data, "msrvtt_data")
    direct_flags = ["--datatype", "msrvtt", "--train_csv", os.path.join(annotations, "MSRVTT_train.9k.csv"),
                    "--val_csv", os.path.join(annotations, "MSRVTT_JSFUSION_test.csv"),
                    "--data_path", os.path.join(annotations, "MSRVTT_data.json"),
                    "--features_path", os.path.join(data, "videos", "all"), "--init_model", checkpoint] + EVAL_FLAGS
    direct = str(tmp_path / "direct_eval")
    assert eval_t2v(direct_flags + ["--output_dir", direct]) == 0
    assert eval_v2t(direct_flags + ["--output_dir", direct]) == 0

    table = summary_rows(run.stdout)
    for direction in NAMES:
        ours = json.load(open(os.path.join(written, f"results_{direction}.json")))
        reference = json.load(open(os.path.join(direct, f"results_{direction}.json")))
        assert (ours["num_texts"], ours["num_videos"]) == (reference["num_texts"], reference["num_videos"]) == (6, 6)
        assert ours["metrics"] == reference["metrics"] and ours["levels"] == reference["levels"]
        for key, label in (("raw", "raw"), ("sk_norm", "SK-norm"), ("dsl", "DSL*")):
            expected = [f"{reference['metrics'][key][m]:.1f}" for m in ("R1", "R5", "R10", "MdR", "MnR")]
            assert table[direction][label] == expected, (direction, label)
