"""Reading rule files: YAML with line/column tracking, pydantic validation, actionable errors.

The first step of the rules stage. ``yaml.compose`` keeps a mark for every
node, so each validation error is reported as ``file:line:col: field.path:
found X, expected Y``; all errors of all files are collected before giving up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor

from daemon.errors import ConfigError
from daemon.rules.schema import RuleFile

RULE_SUFFIXES = (".yaml", ".yml")
Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True, order=True)
class RuleError:
    """One problem in one rule file, located precisely enough to fix it without searching."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RuleLoadError(ConfigError):
    """The rule files are invalid; ``errors`` lists every problem found, not just the first."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = tuple(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in rule files:\n{lines}", reason="invalid_rules")


@dataclass(frozen=True, slots=True)
class LoadedDoc:
    """One validated YAML document and where each of its fields came from."""

    file: str
    doc: RuleFile
    marks: dict[Loc, tuple[int, int]]

    def where(self, loc: Loc) -> tuple[int, int]:
        """Line and column of ``loc``, or of its nearest ancestor that has a mark."""
        while loc and loc not in self.marks:
            loc = loc[:-1]
        return self.marks.get(loc, (0, 0))

    def error(self, loc: Loc, message: str) -> RuleError:
        line, col = self.where(loc)
        return RuleError(self.file, line, col, format_loc(loc), message)


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders as their ``*.yaml``/``*.yml`` files (not recursive: ``tests/`` is not rules)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in RULE_SUFFIXES))
        else:
            out.append(path)
    return out


class _Builder:
    """Turns a composed YAML node tree into plain data, recording the mark of every path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: dict[Loc, tuple[int, int]] = {}
        self.key_marks: dict[Loc, tuple[int, int]] = {}
        self.errors: list[RuleError] = []
        self._scalars = SafeConstructor()

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        self.marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalars.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str | int | float | bool) or key is None:
                    self._err(key_node, loc, "mapping keys must be plain scalars")
                    continue
                key = str(key)
                if key in out:
                    self._err(key_node, (*loc, key), f"duplicate key {key!r}")
                    continue
                self.key_marks[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node)

    def _err(self, node: yaml.Node, loc: Loc, message: str) -> None:
        mark = node.start_mark
        self.errors.append(RuleError(self.file, mark.line + 1, mark.column + 1, format_loc(loc), message))


def _found(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{text[:60]}…" if len(text) > 60 else text


def _data_loc(data: Any, raw: Loc) -> Loc:
    """pydantic's loc with union-branch tags (``list[str]``, ``function-after[...]``) dropped."""
    out: list[str | int] = []
    for i, part in enumerate(raw):
        last = i == len(raw) - 1
        if isinstance(data, dict) and isinstance(part, str) and (part in data or last):
            out.append(part)
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            out.append(part)
            data = data[part]
    return tuple(out)


def _pydantic_errors(
    file: str, data: Any, exc: ValidationError, builder: _Builder, root: type[BaseModel]
) -> list[RuleError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _data_loc(data, tuple(err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            line, col = builder.key_marks.get(loc, (0, 0))
            message = f"unknown key {loc[-1]!r}; expected {_allowed_keys(root, loc)}"
        elif kind == "missing":
            line, col = _nearest(builder.marks, loc[:-1])
            message = "missing required field"
        else:
            line, col = _nearest(builder.marks, loc)
            expected = err["msg"].removeprefix("Value error, ").replace("Input should be ", "expected ", 1)
            expected = expected[0].lower() + expected[1:]
            value = err.get("input")
            # A whole-section check (model validator) explains itself; quoting the mapping adds nothing.
            message = expected if isinstance(value, dict) else f"found {_found(value)}, {expected}"
        out.append(RuleError(file, line, col, format_loc(loc), message))
    return out


def _nearest(marks: dict[Loc, tuple[int, int]], loc: Loc) -> tuple[int, int]:
    while loc and loc not in marks:
        loc = loc[:-1]
    return marks.get(loc, (0, 0))


def _allowed_keys(root: type[BaseModel], loc: Loc) -> str:
    """The keys valid at ``loc``'s parent, found by walking the schema's fields."""
    model: Any = root
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        nxt = _model_in(field.annotation) if field is not None else None
        if field is None or nxt is None:
            return "one of the documented fields (see docs/rules.md)"
        # Lists and dicts of models: the index or free-form key comes next; skip it.
        text = str(field.annotation)
        parts = parts[text.count("dict[") + text.count("list[") :]
        model = nxt
    names = sorted(f.alias or n for n, f in model.model_fields.items())
    return "one of: " + ", ".join(names)


def _model_in(annotation: Any) -> Any:
    stack = [annotation]
    while stack:
        ann = stack.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
        stack.extend(getattr(ann, "__args__", ()))
    return None


def parse_yaml(path: Path, model: type[M]) -> tuple[list[tuple[M, dict[Loc, tuple[int, int]]]], list[RuleError]]:
    """Parse every YAML document of ``path`` into ``model``; never raises for bad content."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [RuleError(file, 0, 0, "", f"cannot read: {exc}")]
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return [], [RuleError(file, line, col, "", f"invalid YAML: {exc.problem}")]
    except yaml.YAMLError as exc:
        # Not "marked": e.g. ReaderError for a control character (found by tests/fuzz/test_parsers.py).
        return [], [RuleError(file, 0, 0, "", f"invalid YAML: {exc}")]
    docs: list[tuple[M, dict[Loc, tuple[int, int]]]] = []
    errors: list[RuleError] = []
    for node in nodes:
        if node is None:
            continue
        builder = _Builder(file)
        data = builder.build(node)
        errors.extend(builder.errors)
        if not isinstance(data, dict):
            errors.append(RuleError(file, *builder.marks[()], "", f"found {_found(data)}, expected a mapping"))
            continue
        try:
            doc = model.model_validate(data)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(file, data, exc, builder, model))
            continue
        docs.append((doc, builder.marks))
    return docs, errors


def load_file(path: Path) -> tuple[list[LoadedDoc], list[RuleError]]:
    """Every rule document of one file, validated."""
    docs, errors = parse_yaml(path, RuleFile)
    return [LoadedDoc(str(path), doc, marks) for doc, marks in docs], errors


def load_paths(paths: Iterable[Path]) -> tuple[list[LoadedDoc], list[RuleError]]:
    """Every document of every rule file under ``paths``, with all errors found."""
    files = expand_paths(paths)
    docs: list[LoadedDoc] = []
    errors: list[RuleError] = []
    if not files:
        errors.append(RuleError(", ".join(str(p) for p in paths) or "(none)", 0, 0, "", "no rule files found"))
    for path in files:
        if not path.exists():
            errors.append(RuleError(str(path), 0, 0, "", "no such file"))
            continue
        file_docs, file_errors = load_file(path)
        docs.extend(file_docs)
        errors.extend(file_errors)
    return docs, errors
