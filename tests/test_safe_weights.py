"""Weights files that would run code, and files that are no checkpoint at all (README, "Bad input and faults").

A TorchScript archive (OpenAI's ``ViT-B-32.pt`` format) is read as data: the same state dict as ``torch.jit.load``
on a real archive written by ``torch.jit.save``, while archives whose loading runs code are refused with one line
and nothing of them runs (the marker files stay as they were).
"""
import io
import os
import pickle
import warnings
import zipfile
from typing import Tuple

import pytest
import torch
from helpers import data_flags, tiny_flags

from eval_t2v.main import main as eval_t2v
from modules.common.errors import CheckpointError
from modules.common.io import read_checkpoint
from modules.common.torchscript import is_torchscript_archive, read_torchscript_state_dict
from modules.model.clip import build_random_clip, load_clip
from modules.model.tokenizer import tokenize
from train.main import main as train_main

MARKER_BYTES = b"untouched"


def _jit_load(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """A traced tiny CLIP in fp16, saved by torch.jit.save as OpenAI saved ViT-B-32.pt."""
    torch.manual_seed(0)
    model = build_random_clip("tiny").eval()
    path = str(tmp_path_factory.mktemp("archive") / "ViT-tiny.pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.zeros(1, 3, 224, 224), tokenize(["a"], 77)), check_trace=False)
    traced.half().save(path)
    return path


class _Buffered(torch.nn.Module):
    """Parameters, a buffer, a None bias and a nested ModuleList: what a scripted archive may declare."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False)])
        self.register_buffer("running", torch.arange(6.0).view(2, 3).t())  # non-contiguous
        self.scale = torch.nn.Parameter(torch.tensor(2.5, dtype=torch.float64))
        self.plain_attribute = 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x * self.scale + self.running.sum()


def _same_state_dicts(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape, k
        assert ours[k].stride() == theirs[k].stride() and torch.equal(ours[k], theirs[k]), k


def test_traced_archive_reads_exactly_as_torch_jit_load(archive):
    assert is_torchscript_archive(archive)
    _same_state_dicts(read_torchscript_state_dict(archive), _jit_load(archive).state_dict())
    reference = build_random_clip("tiny")
    reference.load_state_dict({k: v.float() for k, v in _jit_load(archive).state_dict().items()})
    ours = load_clip(archive)
    for k, v in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


def test_scripted_archive_with_buffers_reads_exactly(tmp_path):
    path = str(tmp_path / "scripted.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_Buffered()).save(path)
    ours = read_torchscript_state_dict(path)
    _same_state_dicts(ours, _jit_load(path).state_dict())
    assert "running" in ours and "blocks.1.bias" not in ours and "plain_attribute" not in ours


def _marker(folder) -> str:
    path = str(folder / "marker.bin")
    with open(path, "wb") as f:
        f.write(MARKER_BYTES)
    return path


def _assert_untouched(marker: str) -> None:
    with open(marker, "rb") as f:
        assert f.read() == MARKER_BYTES


class _OverwritesOnLoad(torch.nn.Module):
    """torch.jit.load runs ``__setstate__``, which maps the target file and overwrites its bytes."""

    def __init__(self, target: str):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return (self.target, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.target = state[0]
        self.weight = state[1]
        self.training = state[2]
        mapped = torch.from_file(state[0], shared=True, size=len("untouched"), dtype=torch.uint8)
        mapped.fill_(88)
        print(mapped.sum())  # keeps the write from being optimised away


@pytest.fixture()
def code_running_archive(tmp_path) -> tuple[str, str]:
    marker = _marker(tmp_path)
    path = str(tmp_path / "ViT-B-32.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_OverwritesOnLoad(marker)).save(path)
    return path, marker


def test_archive_whose_setstate_writes_a_file_is_refused_and_nothing_runs(code_running_archive, capfd):
    path, marker = code_running_archive
    with pytest.raises(CheckpointError) as e:
        load_clip(path)
    _assert_untouched(marker)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: refused: ")
    assert "__setstate__" in message and "nothing of it was run" in message
    # The archive is real: torch.jit.load, what peers call, does run its code and overwrites the file.
    _jit_load(path)
    capfd.readouterr()
    with open(marker, "rb") as f:
        assert f.read() == b"X" * len(MARKER_BYTES)


def test_code_running_archive_through_the_entry_point(code_running_archive, synthetic_set, tmp_path, capsys):
    path, marker = code_running_archive
    out = str(tmp_path / "run")
    args = tiny_flags(synthetic_set, out) + ["--epochs", "1", "--pretrained_clip_name", path]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "refused" in lines[0] and "Traceback" not in err, err
    _assert_untouched(marker)
    assert not os.path.exists(os.path.join(out, "checkpoints"))


class _Exec:
    """A pickle payload: unpickling it runs ``exec`` (what a plain pickle.load of data.pkl would do)."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return exec, (self.source,)


def _replace_entry(src: str, dst: str, name: str, data: bytes) -> None:
    """Copy the zip ``src`` to ``dst`` with one entry's bytes replaced (the rest stored as torch stores it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, data if info.filename.endswith(name) else zin.read(info))


@pytest.mark.parametrize("case", ["exec_in_data_pkl", "os_system_global", "stack_global_eval"])
def test_data_pkl_referencing_code_is_refused(case, archive, tmp_path):
    marker = _marker(tmp_path)
    source = f"open({marker!r}, 'wb').write(b'pwned')"
    if case == "exec_in_data_pkl":
        payload, named = pickle.dumps(_Exec(source), protocol=2), "__builtin__.exec"  # protocol 2 names
    elif case == "os_system_global":
        payload, named = b"cposix\nsystem\n(Vtouch " + marker.encode() + b"\ntR.", "posix.system"
    else:
        payload = pickle.dumps(_Exec(source), protocol=4).replace(b"exec", b"eval")
        named = "builtins.eval"
    path = str(tmp_path / "tampered.pt")
    _replace_entry(archive, path, "/data.pkl", payload)
    with pytest.raises(CheckpointError, match=rf"refused: data.pkl references {named}") as e:
        load_clip(path)
    assert "\n" not in str(e.value)
    _assert_untouched(marker)


def test_plain_pickle_of_the_payload_would_run_it(tmp_path):
    """The payload used above is live: the standard unpickler runs it."""
    marker = _marker(tmp_path)
    pickle.loads(pickle.dumps(_Exec(f"open({marker!r}, 'wb').write(b'pwned')"), protocol=2))
    with open(marker, "rb") as f:
        assert f.read() == b"pwned"


@pytest.mark.parametrize("case,says", [
    ("truncated", "not a readable TorchScript archive"),
    ("short_storage", "not a readable TorchScript archive (ValueError: storage record data/0"),
    ("compressed_storage", "compression 8"),
    ("no_data_pkl", "not a TorchScript archive"),
])
def test_malformed_archives_are_one_line(case, says, archive, tmp_path):
    path = str(tmp_path / f"{case}.pt")
    with open(archive, "rb") as f:
        data = f.read()
    if case == "truncated":
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        with pytest.raises(CheckpointError) as e:
            load_clip(path)
        assert "\n" not in str(e.value)
        return
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if case == "short_storage" and info.filename.endswith("/data/0"):
                body = body[:-2]
            if case == "compressed_storage" and info.filename.endswith("/data/0"):
                info.compress_type = zipfile.ZIP_DEFLATED
            if case == "no_data_pkl" and info.filename.endswith("/data.pkl"):
                continue
            zout.writestr(info, body)
    with pytest.raises(CheckpointError) as e:
        read_torchscript_state_dict(path)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_tensor_reaching_past_its_storage_is_refused(archive, tmp_path):
    """A tensor record whose size points past the storage's bytes (a read outside the file's data)."""
    with zipfile.ZipFile(archive) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        data = z.read(name)
    # positional_embedding [77, 64]: claim 78 rows of the same 77-row storage
    tampered = data.replace(b"K\x4dK\x40", b"K\x4eK\x40", 1)
    assert tampered != data
    path = str(tmp_path / "overreach.pt")
    _replace_entry(archive, path, "/data.pkl", tampered)
    with pytest.raises(CheckpointError, match="reaches past its storage"):
        read_torchscript_state_dict(path)


# ------------------------------------------------------------------------------ files that are no checkpoint at all

def _json_file(folder) -> str:
    path = str(folder / "results_t2v.json")
    with open(path, "w") as f:
        f.write('{"direction": "t2v", "metrics": {}}')
    return path


@pytest.mark.parametrize("kind,says", [
    ("json", "not a checkpoint: it is JSON text (starts with '{\"direction\""),
    ("text", "not a checkpoint: it is a text file (starts with 'epoch 1"),
    ("empty", "not a checkpoint: the file is empty"),
    ("binary", "not a checkpoint: unknown binary format"),
    ("folder", "not an exported model folder (config.json is missing)"),
    ("fifo", "not a checkpoint: it is a FIFO"),
    ("torchscript", "not a checkpoint: it is a TorchScript archive (the format of OpenAI's CLIP weights), which is "
                    "given to --pretrained_clip_name"),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is(kind, says, archive, tmp_path):
    path = str(tmp_path / f"{kind}.pth")
    if kind == "json":
        path = _json_file(tmp_path)
    elif kind == "text":
        with open(path, "w") as f:
            f.write("epoch 1 loss 0.3\n")
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "binary":
        with open(path, "wb") as f:
            f.write(b"\x00\x01\xfe\xff" * 10)
    elif kind == "folder":
        os.makedirs(path)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer comes: never opened
    else:
        path = archive
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(e.value).startswith(f"{path}: {says}") and "\n" not in str(e.value)
    assert "could run code" not in str(e.value)


def test_json_given_as_a_checkpoint_to_the_entry_points(synthetic_set, tmp_path, capsys):
    path = _json_file(tmp_path)
    runs = ((eval_t2v, data_flags(synthetic_set) + ["--init_model", path, "--device", "cpu"]),
            (train_main, tiny_flags(synthetic_set, "") + ["--epochs", "1", "--resume_model", path]))
    for fn, args in runs:
        out = str(tmp_path / f"out_{fn.__module__}")
        assert fn(args + ["--output_dir", out]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and f"{path}: not a checkpoint: it is JSON text" in lines[0], err
        assert "could run code" not in err


def test_legacy_pickle_checkpoint_still_loads(tmp_path):
    """torch.save's legacy (non-zip) format starts with a pickle opcode, not the zip magic: still accepted."""
    path = str(tmp_path / "legacy.pth")
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path)["w"], torch.ones(2))
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    assert buffer.getvalue()[:4] == b"PK\x03\x04"
