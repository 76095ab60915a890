"""Options declared once: a stage's frozen dataclass is the single source of every option.

Each field of ``TrainConfig``, ``ConvertConfig`` and ``RunConfig`` carries its type (the
annotation), its default and its help (``option(...)`` metadata). From that one declaration:

- :func:`click_options` makes the command's flags (type, choices, range, default in the help);
- :func:`load_file` / :func:`from_mapping` read ``--config`` YAML/JSON files and device profiles,
  refusing unknown keys and wrong types with the file, the key and the expected type;
- :func:`build` merges defaults, a config file and the flags given on the command line;
- :func:`validate` checks choices and ranges of an instance, so the Python API gets the same
  checks as the CLI;
- :func:`to_args` turns values back into command-line flags (a profile's ``run.args``).

Ultralytics' ``cfg/default.yaml`` + ``cfg/__init__.py`` play this role there: one source of
defaults, unknown keys refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """How one dataclass field appears outside Python.

    Attributes:
        help: one line for ``--help`` and the docs.
        flag: the long flag without dashes when it differs from the field name
            (``lr`` for ``learning_rate``); the field name with ``-`` otherwise.
        short: a one-letter alias (``o`` gives ``-o``).
        choices: the allowed values of a string option.
        min, max: the closed range of a number (``min_open``: the lower bound is excluded).
        cli: False for options that exist only in files and the Python API.
        negatable: ``--no-flag`` is how a command line says False (a boolean that defaults to
            True); every boolean flag has the ``--no-`` form, this says which one ``to_args`` writes.
        envvar: an environment variable that sets the flag.
        metavar: the placeholder shown in ``--help``.
        exists: the value is a path that must exist: ``file``, ``dir`` or ``any``.
        int_as_text: a whole number is accepted for this text option and kept as text (camera
            index ``0``, GPIO pin ``17``, port ``8080`` written without quotes in YAML).
        writes: the value is a file or folder the command writes (a device profile may name
            only one inside the service's state directory).
    """

    help: str = ""
    flag: Optional[str] = None
    short: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None
    min: Optional[float] = None
    max: Optional[float] = None
    min_open: bool = False
    cli: bool = True
    negatable: bool = False
    envvar: Optional[str] = None
    metavar: Optional[str] = None
    exists: Optional[str] = None
    int_as_text: bool = False
    writes: bool = False


def option(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with its :class:`Option` metadata (tuples default through a factory)."""
    meta = {"option": Option(help=help, **kw)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Spec:
    """A resolved field: name, base type, whether None is allowed, and its :class:`Option`."""

    name: str
    base: type
    optional: bool
    multiple: bool
    default: Any
    opt: Option

    @property
    def flag(self) -> str:
        return "--" + (self.opt.flag or self.name.replace("_", "-"))

    @property
    def type_name(self) -> str:
        name = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[self.base]
        if self.multiple:
            name = f"a list of {name.split(' ', 1)[1]}s"
        return name + (" or null" if self.optional else "")


_SPECS: Dict[type, List[Spec]] = {}


def specs(cls: type) -> List[Spec]:
    """The :class:`Spec` of every field of dataclass ``cls``, in declaration order."""
    if cls in _SPECS:
        return _SPECS[cls]
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        tp, optional, multiple = hints[f.name], False, False
        if typing.get_origin(tp) is Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional, tp = True, args[0]
        if typing.get_origin(tp) in (tuple, Tuple):
            multiple, tp = True, typing.get_args(tp)[0]
        if tp not in (str, int, float, bool):
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported option type {tp}")
        opt = f.metadata.get("option", Option())
        out.append(Spec(f.name, tp, optional, multiple, f.default, opt))
    _SPECS[cls] = out
    return out


def spec(cls: type, name: str) -> Spec:
    for s in specs(cls):
        if s.name == name:
            return s
    raise KeyError(name)


def defaults(cls: type) -> Dict[str, Any]:
    """Field name -> default of every field of ``cls``."""
    return {s.name: s.default for s in specs(cls)}


# Checking values

def _range_text(o: Option) -> str:
    lo, hi = o.min, o.max
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}" + (" (excluding {:g})".format(lo) if o.min_open else "")
    if lo is not None:
        return f"greater than {lo:g}" if o.min_open else f"at least {lo:g}"
    return f"at most {hi:g}"


def check_value(s: Spec, value: Any, where: str) -> Any:
    """``value`` for field ``s`` as the field's type, or a ConfigError naming ``where``, the
    key and what is expected. Integers are accepted for numbers; strings never for numbers."""
    key = f"{where}: {s.name}" if where else s.name
    if value is None:
        if s.optional:
            return None
        raise ConfigError(f"{key} cannot be empty; expected {s.type_name}")
    if s.multiple:
        items = [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key} should be {s.type_name}, got {type(value).__name__} {value!r}")
        single = dataclasses.replace(s, multiple=False, optional=False)
        return tuple(check_value(single, v, where) for v in items)
    if s.base is str and s.opt.int_as_text and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    ok = {
        str: isinstance(value, str),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
    }[s.base]
    if not ok:
        raise ConfigError(f"{key} should be {s.type_name}, got {type(value).__name__} {value!r}")
    if s.base is float:
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"{key} should be a number, got nan")
    o = s.opt
    if o.exists and isinstance(value, str):
        p = Path(value)
        if not p.exists():
            raise ConfigError(f"{key}: '{value}' does not exist")
        if o.exists == "file" and not p.is_file():
            raise ConfigError(f"{key}: '{value}' is not a file")
        if o.exists == "dir" and not p.is_dir():
            raise ConfigError(f"{key}: '{value}' is not a folder")
    if o.choices is not None and value not in o.choices:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(o.choices)}")
    if s.base in (int, float):
        low_bad = o.min is not None and (value <= o.min if o.min_open else value < o.min)
        high_bad = o.max is not None and value > o.max
        if low_bad or high_bad:
            raise ConfigError(f"{key} must be {_range_text(o)}, got {value:g}")
    return value


def validate(obj: Any) -> None:
    """Check every field of a config instance (the Python API gets the CLI's checks)."""
    for s in specs(type(obj)):
        check_value(s, getattr(obj, s.name), "")


# Files and mappings

def from_mapping(cls: Type[T], data: Any, where: str, *, allowed: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Checked values from a mapping read from ``where`` (a file name, or ``file: key``).

    Keys may use ``-`` or ``_``. An unknown key, or a wrong type, raises a ConfigError naming
    ``where``, the key and what is valid. ``allowed`` limits the keys further.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of option: value, got {type(data).__name__}")
    known = {s.name: s for s in specs(cls)}
    if allowed is not None:
        known = {k: v for k, v in known.items() if k in allowed}
    out: Dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).replace("-", "_")
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{raw}'; valid keys are {', '.join(known)}")
        out[key] = check_value(known[key], value, where)
    return out


def yaml_loader() -> type:
    """A safe YAML loader that also reads ``1e-3`` as a number (YAML 1.1, PyYAML's dialect,
    wants ``1.0e-3``; people write ``1e-3``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def read_file(path: Union[str, Path]) -> Any:
    """The parsed content of a YAML (or JSON) file, with one-line errors naming it."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (expected YAML)") from e
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=yaml_loader())
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({first})") from e


def load_file(cls: Type[T], path: Union[str, Path]) -> Dict[str, Any]:
    """Checked values of a ``--config`` file for ``cls``."""
    return from_mapping(cls, read_file(path), str(path))


def make(cls: Type[T], values: Mapping[str, Any], where: str = "") -> T:
    """An instance of ``cls`` from checked ``values``; constructor errors name ``where``."""
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where and not str(e).startswith(where) else str(e)) from e


# Click

def click_options(cls: type, *, exclude: Sequence[str] = (), only: Optional[Sequence[str]] = None,
                  helps: Optional[Mapping[str, str]] = None) -> Callable:
    """Decorator adding one click option per CLI field of ``cls``.

    :func:`build` tells the flags given on the command line from defaults by click's parameter
    source, so a ``--config`` file fills only what was not typed. ``helps`` replaces the help
    of options whose meaning narrows in this command.
    """
    import click

    def decorate(f: Callable) -> Callable:
        chosen = [s for s in specs(cls) if s.opt.cli and s.name not in exclude and (only is None or s.name in only)]
        for s in reversed(chosen):
            if helps and s.name in helps:
                s = dataclasses.replace(s, opt=dataclasses.replace(s.opt, help=helps[s.name]))
            f = _click_option(click, s)(f)
        return f

    return decorate


def _click_option(click: Any, s: Spec) -> Callable:
    o = s.opt
    decls = [s.flag]
    if o.short:
        decls.append("-" + o.short)
    kw: Dict[str, Any] = dict(help=o.help, envvar=o.envvar, show_envvar=bool(o.envvar), metavar=o.metavar)
    default = None if s.default is MISSING else s.default
    # Click gets the real default (so --help shows it); `given` tells a flag the user typed from
    # a default by its parameter source, which lets a --config file fill what was not typed.
    kw["default"] = default
    kw["show_default"] = default is not None and default != "" and default != () and default is not False
    if s.base is bool:
        # Every switch has an off form, so a flag can undo what a --config file turned on;
        # a switch that is itself a "no" (--no-verify) is undone by the plain word (--verify).
        off = f"--{s.flag[5:]}" if s.flag.startswith("--no-") else f"--no-{s.flag[2:]}"
        decls = [f"{s.flag}/{off}"] + (["-" + o.short] if o.short else [])
        return click.option(*decls, s.name, **kw)
    if o.choices is not None:
        kw["type"] = click.Choice(list(o.choices))
    elif o.exists:
        kw["type"] = click.Path(exists=True, file_okay=o.exists != "dir", dir_okay=o.exists != "file")
    elif s.base in (int, float) and (o.min is not None or o.max is not None):
        rng = click.IntRange if s.base is int else click.FloatRange
        kw["type"] = rng(o.min, o.max, min_open=o.min_open)
    else:
        kw["type"] = s.base
    kw["multiple"] = s.multiple
    return click.option(*decls, s.name, **kw)


def given(ctx: Any, names: Sequence[str]) -> Dict[str, Any]:
    """The parameters of click context ``ctx`` among ``names`` that the user gave (flag or
    environment variable), not left at their default."""
    from click.core import ParameterSource

    out = {}
    for name in names:
        src = ctx.get_parameter_source(name)
        if src in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = ctx.params[name]
            if isinstance(value, list):
                value = tuple(value)
            out[name] = value
    return out


def build(cls: Type[T], ctx: Any, config: Optional[Union[str, Path]] = None,
          adjust: Optional[Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = None, **fixed: Any) -> T:
    """``cls`` from its defaults, then ``config`` (a YAML/JSON file), then the flags the user
    gave on the command line, then ``fixed`` (arguments such as DATA). ``adjust(values,
    flags)`` may settle options that depend on each other."""
    values: Dict[str, Any] = load_file(cls, config) if config else {}
    flags = given(ctx, [s.name for s in specs(cls) if s.opt.cli])
    values.update(flags)
    values.update({k: v for k, v in fixed.items() if v is not None})
    if adjust is not None:
        values = adjust(values, flags)
    return make(cls, values, str(config) if config else "")


# Back to flags

def to_args(cls: type, values: Mapping[str, Any]) -> List[str]:
    """Command-line arguments that give ``values`` (field name -> value) to a command whose
    options come from ``cls``: ``True`` flags appear bare, ``False`` ones are omitted (or
    ``--no-x`` when the default is on), lists repeat the flag, None is omitted."""
    out: List[str] = []
    by_name = {s.name: s for s in specs(cls)}
    for name, value in values.items():
        s = by_name[name]
        if value is None:
            continue
        if s.base is bool:
            if value:
                out.append(s.flag)
            elif s.opt.negatable:
                out.append(f"--no-{s.flag[2:]}")
            continue
        for v in (value if s.multiple else (value,)):
            out += [s.flag, format(v, "g") if isinstance(v, float) else str(v)]
    return out
