"""The one configuration mechanism of both halves: dataclass sections from YAML, then `--set section.key=value`.

A package describes its config as a root dataclass whose fields are section dataclasses (`model:`, `dedup:`, ...)
and a few top-level scalars (`preset`, `workers`), and wraps it in a `ConfigSchema`. The schema then

- reads a YAML file or a `--set` value with one YAML loader (`load_yaml`), so `3e-4` is a number and `off` is a
  word in both halves, wherever it is written;
- checks every key as it is set, with "did you mean" for a typo, naming where the key came from;
- converts each value to the type its field declares, read through `typing.get_type_hints` (so it does not matter
  whether the module was written with `from __future__ import annotations`);
- builds the root dataclass, whose sections' `__post_init__` then check what only they know (ranges, relations).

It imports neither torch nor `pretrain`: `pretrain` imports it (pretrain may import data_pipeline, never the
other way), so the pipeline CLI stays free of torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from infra.errors import UserError

BOOL_TAG = "tag:yaml.org,2002:bool"
FLOAT_TAG = "tag:yaml.org,2002:float"


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 scalars: `3e-4` is a float (1.1 wants `3.0e-4`); only true/false are
    booleans, so `off`, `no` and `on` stay words and the field's declared type decides what they mean."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_ConfigLoader.add_implicit_resolver(
    FLOAT_TAG, re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+.0123456789")
)

BOOL_WORDS = {"yes": True, "on": True, "no": False, "off": False}  # YAML 1.1 booleans, accepted for bool fields


def load_yaml(text: str) -> Any:
    """A YAML document or a `--set` value; the one place either half turns config text into values."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def suggest(name: str, valid: Sequence[str], prefix: str = "") -> str:
    """`did you mean 'x'? ` for the closest valid name, or "" when none is close.

    Names are compared without their section (`prefix`, added back to the answer): `dedup.zzz` shares `dedup.`
    with every dedup key and would otherwise look close to one of them.
    """
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"did you mean {prefix + close[0]!r}? " if close else ""


@functools.cache
def field_types(klass: type) -> dict[str, Any]:
    """Each field's declared type as an object (not the string `from __future__ import annotations` leaves)."""
    hints = get_type_hints(klass)
    return {f.name: hints[f.name] for f in dataclasses.fields(klass)}


class _Mismatch(UserError):
    """A value does not fit its declared type; the schema re-raises it as the package's error, naming the key.

    Never escapes this module; a UserError only so that every exception class of the project has the shared base."""


def coerce(hint: Any, value: Any) -> Any:
    """`value` as the type `hint` declares: ints where integral numbers are, tuples from YAML lists; else _Mismatch."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return _coerce_union(hint, args, value)
    if value is None:
        raise _Mismatch(f"must not be null; give {describe(hint)}")
    if origin is Literal:
        if value not in args:
            hint_text = suggest(value, [str(a) for a in args]) if isinstance(value, str) else ""
            raise _Mismatch(f"got {value!r}; {hint_text}use one of {'|'.join(map(str, args))}")
        return value
    if origin in (tuple, list):
        return _coerce_sequence(hint, origin, args, value)
    return _coerce_scalar(hint, value)


def _coerce_union(hint: Any, args: tuple, value: Any) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise _Mismatch(f"must not be null; give {describe(hint)}")
    for member in (a for a in args if a is not type(None)):
        try:
            return coerce(member, value)
        except _Mismatch:
            continue
    raise _Mismatch(f"expected {describe(hint)}, got {value!r}")


def _coerce_sequence(hint: Any, origin: type, args: tuple, value: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch(f"expected {describe(hint)}, got {value!r}")
    item_types = [args[0]] * len(value) if origin is list or args[1:] == (Ellipsis,) else list(args)
    if len(item_types) != len(value):
        raise _Mismatch(f"expected {describe(hint)}, got {list(value)!r}")
    try:
        items = [coerce(t, v) for t, v in zip(item_types, value, strict=True)]
    except _Mismatch:
        raise _Mismatch(f"expected {describe(hint)}, got {list(value)!r}") from None
    return origin(items)


def _coerce_scalar(hint: Any, value: Any) -> Any:
    if hint is bool:
        value = BOOL_WORDS.get(value.lower(), value) if isinstance(value, str) else value
        ok = isinstance(value, bool)
    elif hint is int:
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = True  # Any, dict, ...: the dataclass checks it
    if not ok:
        quote = f"; write '{value}' to keep it text" if hint is str else ""
        raise _Mismatch(f"expected {describe(hint)}, got {value!r}{quote}")
    return value


def describe(hint: Any) -> str:
    """A type as a user reads it in an error: `an integer`, `a number or null`, `one of every|every_k|off`."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        words = [describe(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is Literal:
        return f"one of {'|'.join(map(str, args))}"
    if origin is list or (origin is tuple and args[1:] == (Ellipsis,)):
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if origin is tuple:
        return f"a list of {len(args)} values [{', '.join(_plural(describe(a), 1) for a in args)}]"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(text: str, count: int = 2) -> str:
    """`an integer` -> `integers` (or `integer` for count 1), for lists."""
    word = text.removeprefix("an ").removeprefix("a ")
    return word if count == 1 or word.endswith("false") else word + "s"


@dataclasses.dataclass(frozen=True)
class ConfigSchema:
    """One package's config: its root dataclass, the error it raises and the text every message starts with.

    Why the schema takes the error class rather than raising its own: each package promises its callers one base
    error (`PipelineError` for `pipeline`, `PretrainError` for `pretrain`) that its entry points catch to print one
    line and exit 2. An error of a third, shared class would escape both; a subclass shared by both halves would
    have to live in data_pipeline and make every pretrain config error a pipeline error.
    """

    root: type  # a dataclass whose dataclass-typed fields are the sections
    error: type[Exception]
    prefix: str = ""  # what every message starts with, as the package's own checks write it (`recipe: `)
    builders: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)  # section -> constructor

    @property
    def sections(self) -> dict[str, type]:
        """Section name -> its dataclass, in declaration order."""
        return {name: t for name, t in field_types(self.root).items() if dataclasses.is_dataclass(t)}

    @property
    def top_level(self) -> dict[str, Any]:
        """Top-level scalar keys (`preset`, `workers`) -> their declared types."""
        return {name: t for name, t in field_types(self.root).items() if not dataclasses.is_dataclass(t)}

    def fail(self, key: str, problem: str) -> Exception:
        """The package's error for `key`, in the one message shape: `<prefix><key>: <problem>`."""
        return self.error(f"{self.prefix}{key}: {problem}")

    def parse_override(self, text: str) -> tuple[str, Any]:
        """`section.key=value` (or `key=value` at the top level) -> ("section.key", value parsed by `load_yaml`)."""
        key, sep, value_text = text.partition("=")
        key = key.strip().removeprefix("--")
        if not (sep and key):
            raise self.fail(text, f"not of the form section.key=value (e.g. --set {self._example()})")
        try:
            return key, load_yaml(value_text)
        except yaml.YAMLError as err:
            raise self.fail(
                key, f"cannot read {value_text!r} as a YAML value ({getattr(err, 'problem', err)})"
            ) from None

    def _example(self) -> str:
        """A real `section.key=value` of this schema (its first key at its default) for messages."""
        section, klass = next(iter(self.sections.items()))
        first = dataclasses.fields(klass)[0]
        default = "VALUE" if _is_required(first) else first.default
        return f"{section}.{first.name}={default}"

    def read_yaml(self, path: str | os.PathLike) -> dict[str, Any]:
        """A config file as a mapping of sections; a missing file or bad YAML is reported as file:line."""
        try:
            document = load_yaml(Path(path).read_text())
        except FileNotFoundError:
            raise self.fail(str(path), "config file not found") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise self.fail(where, f"invalid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(document or {}, dict):
            example = ", ".join(f"{name}:" for name in self.sections)
            raise self.fail(str(path), f"a config file must map sections to keys ({example})")
        return document or {}

    def layer(self, tree: dict[str, Any], mapping: Mapping[str, Any], origin: str) -> dict[str, Any]:
        """Set every key of a nested mapping (a YAML file, a preset) on `tree`, checked; returns `tree`."""
        for name, body in mapping.items():
            if name in self.sections:
                if body is not None and not isinstance(body, Mapping):
                    raise self.fail(name, f"must map keys to values ({origin}), got {type(body).__name__}")
                for key, value in (body or {}).items():
                    self.set(tree, f"{name}.{key}", value, origin)
            else:
                self.set(tree, str(name), body, origin)
        return tree

    def set(self, tree: dict[str, Any], key: str, value: Any, origin: str) -> None:
        """Store `value` under `key` ("section.key" or a top-level key) after checking both against the schema."""
        hint = self._declared_type(key, origin)
        try:
            value = coerce(hint, value)
        except _Mismatch as err:
            raise self.fail(key, f"{err} ({origin})") from None
        section, _, name = key.partition(".")
        if name:
            tree.setdefault(section, {})[name] = value
        else:
            tree[section] = value

    def _declared_type(self, key: str, origin: str) -> Any:
        """The type `key` is declared with; an unknown section or key is an error with the closest valid name."""
        section, _, name = key.partition(".")
        if not name:
            if section in self.top_level:
                return self.top_level[section]
            if section in self.sections:
                raise self.fail(key, f"is a section ({origin}); set its keys one by one, e.g. {key}.KEY=VALUE")
            valid = [*self.top_level, *self.sections]
            raise self.fail(key, f"unknown key ({origin}); {suggest(key, valid)}{self._listing()}")
        if section not in self.sections:
            hint = suggest(section, list(self.sections))
            raise self.fail(key, f"unknown section {section!r} ({origin}); {hint}{self._listing()}")
        known = field_types(self.sections[section])
        if name not in known:
            hint = suggest(name, list(known), prefix=f"{section}.")
            raise self.fail(key, f"unknown key ({origin}); {hint}{section} keys: {', '.join(known)}")
        return known[name]

    def _listing(self) -> str:
        top = f"top-level keys: {', '.join(self.top_level)}; " if self.top_level else ""
        return f"{top}sections: {', '.join(self.sections)}"

    def build(self, tree: Mapping[str, Any]) -> Any:
        """The root dataclass from a checked tree; a required key nobody set is named with how to set it."""
        values = {name: tree[name] for name in self.top_level if name in tree}
        self._require_all(self.root, values, only=self.top_level)
        for name, klass in self.sections.items():
            given = dict(tree.get(name) or {})
            self._require_all(klass, given, prefix=f"{name}.")
            values[name] = self.builders.get(name, klass)(**given)
        return self.root(**values)

    def _require_all(self, klass: type, given: Mapping[str, Any], prefix: str = "", only: Any = None) -> None:
        for f in dataclasses.fields(klass):
            if (only is None or f.name in only) and f.name not in given and _is_required(f):
                raise self.fail(f"{prefix}{f.name}", "is required; set it in the YAML file or with --set")


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
