"""``Configurable``: how a model records its constructor arguments, and how a recorded tree is built again.

A model class inherits :class:`Configurable`; :func:`to_config` writes an instance as ``class_path`` +
``init_args`` (nested modules too) and :func:`from_config` builds it again. A tree is downloaded data
(an export folder's ``config.yaml``, a checkpoint record): before anything is constructed, every
``class_path`` of it must be a model class of ``videogen.models`` (:func:`_model_class`), the kind the
caller expects, with known ``init_args`` keys; a refusal is :class:`~videogen.errors.RefusedFile`. The one
exception: a class's ``retired_init_args`` (arguments it no longer takes that older trees recorded) are
dropped, with one warning per tree, so exports written before an argument was removed still load.
There is no registry and no pickled object anywhere. Nothing here reads or writes a file: the export
folders are ``videogen/pretrained.py``'s.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from typing import Any

import torch

from videogen.errors import RefusedFile

log = logging.getLogger("videogen")


class Configurable:
    """Mixin recording the arguments a module was built with (``self._init_args``), so it can be
    written as ``class_path`` + ``init_args`` and built again by :func:`from_config`."""

    #: constructor arguments this class no longer takes that older export folders and checkpoints
    #: recorded: dropped on load with a warning (any other unknown argument is refused).
    retired_init_args: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original = cls.__init__
        signature = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self, *args, **kw):
            original(self, *args, **kw)
            if type(self) is cls:  # the most derived class records its own signature
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                init_args = {k: v for k, v in bound.arguments.items() if k != "self"}
                self.__dict__["_init_args"] = init_args

        cls.__init__ = __init__


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, Configurable):
        return to_config(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot write a {type(value).__name__} to config.yaml; give the module "
                    "plain arguments or make the argument's class inherit videogen.models.configurable.Configurable")


def to_config(module: Any) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": {...}}`` of a :class:`Configurable` instance (or of the
    module an FSDP unit wraps: FSDP's auto-wrap puts its wrapper where the module was)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(module, FullyShardedDataParallel):
        module = module.module
    init_args = getattr(module, "_init_args", None)
    if init_args is None:
        raise TypeError(f"{type(module).__name__} does not record its constructor arguments: "
                        "inherit videogen.models.configurable.Configurable")
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {k: _encode(v, f"{cls.__name__}.{k}") for k, v in init_args.items()}}


MODEL_PACKAGE = "videogen.models."


def _model_class(class_path: Any, where: str) -> type:
    """The class ``class_path`` names, if it is a model class of this package: an ``nn.Module`` that
    inherits :class:`Configurable`, defined in ``videogen.models.*`` under exactly that name.
    Anything else (a function, another package's class, a helper of the data pipeline) is refused
    before it is looked up further or called."""
    if not isinstance(class_path, str) or not class_path.startswith(MODEL_PACKAGE):
        raise RefusedFile(f"{where}: class_path {class_path!r} is not a videogen model class (only classes under "
                          f"{MODEL_PACKAGE}* are built from export folders and checkpoints)")
    module_name, _, name = class_path.rpartition(".")
    if not name.isidentifier() or not all(part.isidentifier() for part in module_name.split(".")):
        raise RefusedFile(f"{where}: class_path {class_path!r} is not a dotted Python name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RefusedFile(f"{where}: class_path {class_path!r}: no such module ({e})") from None
    cls = module.__dict__.get(name)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module) and issubclass(cls, Configurable)
            and cls.__module__.startswith(MODEL_PACKAGE)):
        raise RefusedFile(f"{where}: class_path {class_path!r} is not a videogen model class (an nn.Module "
                          "inheriting videogen.models.configurable.Configurable under videogen.models)")
    return cls


MAX_CONFIG_DEPTH = 32  # nested mappings/lists in a config tree: far more than any model needs


def check_tree(config: Any, where: str, expect: type | tuple[type, ...] | None = None, depth: int = 0) -> None:
    """Walk a ``class_path`` + ``init_args`` tree without building anything: every class_path is a
    model class, the top one is ``expect`` (when given), every init_args key is a constructor argument."""
    if depth > MAX_CONFIG_DEPTH:
        raise RefusedFile(f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels")
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        raise RefusedFile(f"{where}: not a class_path + init_args mapping")
    extra = set(config) - {"class_path", "init_args"}
    if extra:
        raise RefusedFile(f"{where}: unknown keys {sorted(extra)} beside class_path and init_args")
    cls = _model_class(config["class_path"], where)
    if expect is not None and not issubclass(cls, expect):
        wanted = " or a ".join(e.__name__ for e in (expect if isinstance(expect, tuple) else (expect,)))
        raise RefusedFile(f"{where}: holds a {cls.__name__}, expected a {wanted}")
    init_args = config.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise RefusedFile(f"{where}: init_args of {cls.__name__} is a {type(init_args).__name__}, not a mapping")
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items()
              if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [k for k in init_args if k not in params and k not in cls.retired_init_args]
    if unknown:
        raise RefusedFile(f"{where}: {cls.__name__} takes no argument {unknown[0]!r} (it takes {', '.join(params)})")
    retired = [k for k in init_args if k not in params]
    if retired:
        log.warning("%s: %s no longer takes %s; ignored (export the stage again to drop them)", where, cls.__name__,
                    ", ".join(retired))

    def walk(value: Any, at: str, level: int) -> None:
        if level > MAX_CONFIG_DEPTH:
            raise RefusedFile(f"{at}: nested deeper than {MAX_CONFIG_DEPTH} levels")
        if isinstance(value, dict) and "class_path" in value:
            check_tree(value, at, depth=level)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{at}.{k}", level + 1)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{at}[{i}]", level + 1)
        elif not (value is None or isinstance(value, (bool, int, float, str))):
            raise RefusedFile(f"{at}: a {type(value).__name__} is not a config value")

    for k, v in init_args.items():
        walk(v, f"{where} at {cls.__name__}.{k}", depth + 1)


def from_config(config: dict[str, Any], expect: type | tuple[type, ...] | None = None, where: str = "config") -> Any:
    """Build a module from :func:`to_config` output (nested ``class_path`` dicts included). The whole
    tree is checked first (:func:`check_tree`): a refused tree raises :class:`RefusedFile` before
    any constructor runs."""
    check_tree(config, where, expect)
    return build_tree(config)


def build_tree(config: dict[str, Any]) -> Any:
    """Build a tree :func:`check_tree` has passed (``videogen.pretrained`` checks it before reading weights)."""
    def decode(value: Any) -> Any:
        if isinstance(value, dict) and "class_path" in value:
            return build_tree(value)
        if isinstance(value, list):
            return [decode(v) for v in value]
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        return value

    cls = _model_class(config["class_path"], "config")
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for k, v in (config.get("init_args") or {}).items():
        if k in cls.retired_init_args and k not in params:
            continue  # check_tree warned
        v = decode(v)
        annotation = str(params[k].annotation)
        kwargs[k] = tuple(v) if isinstance(v, list) and "tuple" in annotation else v
    return cls(**kwargs)
