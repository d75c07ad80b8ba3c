"""The layout rules of docs/architecture.md ("Stage map"), read from the source with ``ast``: imports run one way
(entry points -> training / evaluation -> model / data -> common), training and evaluation never import each other,
no import cycle, nothing at the top of modules/ but the subpackages; no file edits ``sys.path``; every flag of the
three entry points has help text and evaluation shows no training flag."""
import ast
import os
import re

import pytest
from helpers import ROOT

from modules.common.cli import cli_fields, flag_name
from modules.evaluation.config import build_parser as eval_parser
from modules.training.config import TrainOptions
from modules.training.config import build_parser as train_parser
from modules.training.optim import OptimConfig

MODULES = os.path.join(ROOT, "modules")
STAGES = ("common", "model", "data", "training", "evaluation")
# What each stage may import besides itself (docs/architecture.md, "Stage map"): data reads captions with the
# tokenizer, nothing else of the model.
ALLOWED = {
    "common": set(),
    "model": {"modules.common"},
    "data": {"modules.common", "modules.model.tokenizer"},
    "training": {"modules.common", "modules.model", "modules.data"},
    "evaluation": {"modules.common", "modules.model", "modules.data"},
}
ENTRY_POINTS = ("train", "eval_t2v", "eval_v2t", "scripts")


def _python_files(folder: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, dirs, files in os.walk(folder) if "__pycache__" not in d
                  for f in files if f.endswith(".py"))


def _module_name(path: str) -> str:
    parts = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: str, known: set[str]) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (deferred imports included), as dotted names; ``from
    package import name`` counts as the submodule where ``name`` is one in ``known``."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(subs or {base})
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, for every file under modules/."""
    files = _python_files(MODULES)
    known = {_module_name(p) for p in files}
    return {_module_name(p): {m for m in _imports(p, known) if m.split(".")[0] in ("modules",) + ENTRY_POINTS}
            for p in files}


def _allowed(stage: str, target: str) -> bool:
    parts = target.split(".")
    if parts[0] != "modules":
        return False  # an entry point
    if len(parts) == 1:
        return False  # the top-level package: say which stage
    if parts[1] == stage:
        return True
    return any(target == rule or target.startswith(rule + ".") for rule in ALLOWED[stage])


def test_modules_holds_only_the_stage_subpackages():
    entries = sorted(n for n in os.listdir(MODULES) if n != "__pycache__")
    assert entries == sorted(["__init__.py", *STAGES])
    for stage in STAGES:
        init = os.path.join(MODULES, stage, "__init__.py")
        with open(init, encoding="utf-8") as f:
            assert ast.get_docstring(ast.parse(f.read())), f"{init} says what the stage holds and may import"


def test_each_stage_imports_only_the_stages_below_it():
    graph = _graph()
    assert {"modules.model.build", "modules.data"} <= graph["modules.training.run"]  # the reader sees imports
    bad = []
    for module, targets in graph.items():
        parts = module.split(".")
        if len(parts) == 1:
            assert targets == set(), f"modules/__init__.py imports {sorted(targets)}"
            continue
        bad += [f"{module} imports {t}" for t in sorted(targets) if not _allowed(parts[1], t)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("stage, target, allowed", [
    ("training", "modules.evaluation.protocol", False), ("evaluation", "modules.training.run", False),
    ("model", "modules.data.video", False), ("data", "modules.model.ucofia", False),
    ("data", "modules.model.tokenizer", True), ("common", "modules.model.clip", False),
    ("evaluation", "train.main", False), ("training", "modules.model", True), ("training", "modules", False),
])
def test_the_rule_itself_tells_allowed_from_forbidden(stage, target, allowed):
    assert _allowed(stage, target) is allowed


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path (first node repeated at the end), or [] (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle():
    assert _cycle(_graph()) == []
    # the search itself finds one where there is one
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_file_edits_sys_path():
    offenders = []
    for folder in ("modules", "tests", "scripts") + ENTRY_POINTS[:3]:
        for path in _python_files(os.path.join(ROOT, folder)):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
                        and node.value.id == "sys":
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, offenders


def _flags(parser) -> dict[str, str]:
    """Every option the parser shows in --help -> its help text."""
    return {s: a.help for a in parser._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("parser", [train_parser, lambda: eval_parser("t2v"), lambda: eval_parser("v2t")],
                         ids=["train", "eval_t2v", "eval_v2t"])
def test_every_flag_has_help_text(parser):
    flags = _flags(parser())
    assert len(flags) > 20
    missing = sorted(f for f, text in flags.items() if not text or not text.strip() or text == "==SUPPRESS==")
    assert not missing, missing


def _training_flags() -> set[str]:
    """The flags of training alone, from the dataclasses: the training and optimiser options, and the shared
    options limited by ``modes`` to training."""
    from modules.common.options import RunOptions
    from modules.data.config import DataConfig
    from modules.model.ucofia import ModelConfig

    own = [f for cls in (TrainOptions, OptimConfig) for f in cli_fields(cls, "train")]
    limited = [f for cls in (RunOptions, DataConfig, ModelConfig) for f in cli_fields(cls, "train")
               if f.metadata["modes"] is not None and not any(m.startswith("eval") for m in f.metadata["modes"])]
    return {"--" + flag_name(f) for f in own + limited}


@pytest.mark.parametrize("direction", ["t2v", "v2t"])
def test_evaluation_shows_no_training_flag(direction, capsys):
    from eval_t2v.main import main as eval_t2v
    from eval_v2t.main import main as eval_v2t

    training = _training_flags()
    assert {"--lr", "--epochs", "--batch_size", "--resume_model", "--coef_lr", "--warmup_proportion"} <= training
    with pytest.raises(SystemExit) as stop:
        (eval_t2v if direction == "t2v" else eval_v2t)(["--help"])
    assert stop.value.code == 0
    shown = set(re.findall(r"(?<![\w-])--\w+", capsys.readouterr().out))
    assert {"--init_model", "--sk_bank_size", "--max_frames", "--output_dir"} <= shown
    assert not shown & training, sorted(shown & training)
    assert shown == set(_flags(eval_parser(direction))) | {"--help"}
