"""The weights of a TorchScript archive (OpenAI's ``ViT-B-32.pt``), read without running anything.

``torch.jit.load`` compiles the archive's code and runs it: a class's ``__setstate__`` executes while loading, and
TorchScript can write files (``torch.from_file(..., shared=True)``). Here the archive is read as data:

- the zip's ``<archive>/data.pkl`` is interpreted by a small pickle machine (``pickletools.genops`` decodes the
  opcodes, nothing is imported or called) that knows tensor storage records, ``_rebuild_tensor_v2``, plain
  containers and numbers, and module objects as inert records of their attributes;
- which attributes are parameters and buffers comes from the ``__parameters__`` / ``__buffers__`` lines of the
  archive's code, read as text (``ast.literal_eval`` of a list of names);
- anything else (another global, another opcode, a class with its own ``__setstate__``, a compressed or short
  storage record) is refused with one line naming it.

The result equals ``torch.jit.load(path).state_dict()``: the same keys, dtypes and values.
"""
from __future__ import annotations

import ast
import pickletools
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from modules.common.errors import CheckpointError

# Storage classes of torch's pickles -> the dtype of their bytes.
STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# Typed-list helpers of older TorchScript pickles: each returns its first argument unchanged.
_LIST_TAGS = {"build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_genericlist",
              "restore_type_tag"}
_CLASS = re.compile(r"^class (\w+)\(([\w.]+)\):")
_DECLARED = re.compile(r"^\s+__(parameters|buffers)__ = (\[.*\])\s*$")
_SETSTATE = re.compile(r"^\s+def __setstate__\(")


class _Refused(Exception):
    """Something in the archive that a weights file has no reason to hold."""


@dataclass
class _ClassInfo:
    is_module: bool = False
    parameters: list = field(default_factory=list)
    buffers: list = field(default_factory=list)
    has_setstate: bool = False


@dataclass(frozen=True)
class _ScriptClass:
    name: str  # qualified, e.g. __torch__.torch.nn.modules.linear.Linear


@dataclass
class _ScriptObject:
    cls: str
    state: Any = None
    built: bool = False


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


_MARK = object()


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript zip (a ``constants.pkl`` or ``code/`` folder beside ``data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as z:
            return _archive_prefix(z) is not None and any(
                n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _archive_prefix(z: zipfile.ZipFile) -> str | None:
    prefixes = [n[:-len("data.pkl")] for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    return prefixes[0] if len(prefixes) == 1 else None


def read_torchscript_state_dict(path: str) -> "OrderedDict[str, torch.Tensor]":
    """The parameters and buffers of a TorchScript archive, as ``torch.jit.load(path).state_dict()`` gives them.

    Raises:
        CheckpointError: one line naming the file and what was refused or is malformed.
    """
    try:
        with zipfile.ZipFile(path) as z:
            prefix = _archive_prefix(z)
            if prefix is None:
                raise CheckpointError(f"{path}: not a TorchScript archive (no <name>/data.pkl in the zip)")
            if z.namelist().count(prefix + "byteorder") and z.read(prefix + "byteorder").strip() != b"little":
                raise CheckpointError(f"{path}: TorchScript archive written on a big-endian machine (not supported)")
            classes = _read_classes(z, prefix)
            root = _Machine(z, prefix).run(z.read(prefix + "data.pkl"))
            out: OrderedDict[str, torch.Tensor] = OrderedDict()
            _collect(root, "", classes, out)
            return out
    except _Refused as e:
        raise CheckpointError(f"{path}: refused: {e}; a weights archive holds tensors and plain containers only, "
                              "and nothing of it was run") from None
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, RuntimeError, IndexError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _read_classes(z: zipfile.ZipFile, prefix: str) -> dict[str, _ClassInfo]:
    """Per qualified class name: whether it is a module, its parameter and buffer names, whether it has
    ``__setstate__``. The code is read as text, line by line; only list literals are parsed."""
    classes: dict[str, _ClassInfo] = {}
    code = prefix + "code/"
    for name in z.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code):-len(".py")].replace("/", ".")
        current = None
        for line in z.read(name).decode("utf-8").splitlines():
            head = _CLASS.match(line)
            if head:
                info = _ClassInfo(is_module=head.group(2) == "Module")
                current = classes.setdefault(f"{module}.{head.group(1)}", info)
                continue
            if current is None:
                continue
            declared = _DECLARED.match(line)
            if declared:
                names = ast.literal_eval(declared.group(2))
                if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                    raise _Refused(f"malformed __{declared.group(1)}__ line in {name}")
                setattr(current, declared.group(1), names)
            elif _SETSTATE.match(line):
                current.has_setstate = True
    return classes


def _collect(obj: Any, prefix: str, classes: dict[str, _ClassInfo], out: dict) -> None:
    """Parameters and buffers of a module record and its submodules, in ``nn.Module.state_dict`` order."""
    if not isinstance(obj, _ScriptObject):
        raise _Refused(f"the archive's root is a {type(obj).__name__}, not a module")
    info = classes.get(obj.cls)
    if info is None:
        raise _Refused(f"class {obj.cls} has no definition in the archive's code")
    if info.has_setstate:
        raise _Refused(f"class {obj.cls} defines __setstate__, code that torch.jit.load would run")
    if not info.is_module or not isinstance(obj.state, dict):
        raise _Refused(f"object of class {obj.cls} carries custom state instead of module attributes")
    for name in info.parameters + info.buffers:
        value = obj.state.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise _Refused(f"{prefix}{name} of class {obj.cls} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    for name, value in obj.state.items():
        if isinstance(value, _ScriptObject) and classes.get(value.cls, _ClassInfo()).is_module:
            _collect(value, f"{prefix}{name}.", classes, out)


class _Machine:
    """A pickle interpreter for the opcodes torch's TorchScript pickler writes; it never imports or calls code."""

    def __init__(self, z: zipfile.ZipFile, prefix: str):
        self.z, self.prefix = z, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def run(self, data: bytes) -> Any:
        stack: list = []
        memo: dict = {}

        def pop_mark() -> list:
            k = max(i for i, item in enumerate(stack) if item is _MARK)  # by identity: tensors compare elementwise
            items = stack[k + 1:]
            del stack[k:]
            return items

        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return stack.pop()
            if name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[arg])
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG", "BINFLOAT", "FLOAT",
                          "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINBYTES", "SHORT_BINBYTES",
                          "BINBYTES8"):
                stack.append(arg)
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                stack.append(pop_mark())
            elif name == "APPEND":
                value = stack.pop()
                _container(stack[-1], list).append(value)
            elif name == "APPENDS":
                items = pop_mark()
                _container(stack[-1], list).extend(items)
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2])))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _container(stack[-1], dict)[_key(key)] = value
            elif name == "SETITEMS":
                items = pop_mark()
                target = _container(stack[-1], dict)
                for key, value in zip(items[::2], items[1::2]):
                    target[_key(key)] = value
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(self.find(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(self.find(str(module), str(attr)))
            elif name == "BINPERSID":
                stack.append(self.storage(stack.pop()))
            elif name == "REDUCE":
                args, fn = stack.pop(), stack.pop()
                stack.append(self.call(fn, args))
            elif name == "NEWOBJ":
                args, cls = stack.pop(), stack.pop()
                if not isinstance(cls, _ScriptClass) or args != ():
                    raise _Refused(f"NEWOBJ of {cls!r}")
                stack.append(_ScriptObject(cls.name))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if not isinstance(target, _ScriptObject) or target.built:
                    raise _Refused(f"BUILD on {type(target).__name__}")
                target.state, target.built = state, True
            else:
                raise _Refused(f"pickle opcode {name}")
        raise EOFError("data.pkl ends without STOP")

    def find(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptClass(f"{module}.{name}")
        if (module == "torch" and name in STORAGE_DTYPES) or (module, name) in (
                ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")) or (
                module == "torch.jit._pickle" and name in _LIST_TAGS):
            return _Global(module, name)
        raise _Refused(f"data.pkl references {module}.{name}")

    def call(self, fn: Any, args: Any) -> Any:
        if not isinstance(fn, _Global) or not isinstance(args, tuple):
            raise _Refused(f"a call of {fn!r}")
        if fn.name == "_rebuild_tensor_v2":
            return _rebuild_tensor(*args)
        if fn.name == "OrderedDict" and args == ():
            return OrderedDict()
        if fn.name in _LIST_TAGS and args:
            return args[0]
        raise _Refused(f"a call of {fn.module}.{fn.name}{args!r:.60}")

    def storage(self, pid: Any) -> torch.Tensor:
        """A storage record ('storage', <torch.XStorage>, key, location, numel) as a flat tensor of its dtype."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Global)
                and pid[1].name in STORAGE_DTYPES and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise _Refused(f"persistent id {pid!r:.80}")
        _, kind, key, _, numel = pid
        if key not in self.storages:
            dtype = STORAGE_DTYPES[kind.name]
            info = self.z.getinfo(f"{self.prefix}data/{key}")
            size = numel * torch.empty(0, dtype=dtype).element_size()
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != size:
                raise ValueError(f"storage record data/{key}: {info.file_size} bytes stored "
                                 f"(compression {info.compress_type}), {size} expected")
            buffer = bytearray(self.z.read(info))
            self.storages[key] = torch.frombuffer(buffer, dtype=dtype) if size else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _container(obj: Any, kind: type) -> Any:
    if type(obj) is not kind and not (kind is dict and type(obj) is OrderedDict):
        raise _Refused(f"adding items to a {type(obj).__name__}")
    return obj


def _key(key: Any) -> Any:
    if not isinstance(key, (str, int, float, bool, type(None))):
        raise _Refused(f"a dict key of type {type(key).__name__}")
    return key


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, *metadata: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 for a flat storage tensor, with its bounds checked."""
    ints = (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)))
    if not isinstance(storage, torch.Tensor) or not ints:
        raise _Refused("a malformed tensor record")
    if hooks not in (None, OrderedDict()) or any(m not in (None, {}, OrderedDict()) for m in metadata):
        raise _Refused("a tensor with backward hooks or metadata")
    if all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
        raise ValueError(f"tensor of size {list(size)} reaches past its storage of {storage.numel()} elements")
    return storage.as_strided(size, stride, offset)
