"""Hypothesis strategies for bad input: arbitrary JSON, and valid documents with one part broken.

Random bytes rarely get past a JSON parser; the interesting failures hide one
step later, in a document that is almost right. ``mutated`` takes a valid
document and replaces, drops or retypes one value somewhere inside it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "4",
            "firing",
            "resolved",
            "2026-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "not-a-time",
            "2026-13-45T99:00:00Z",
            "1e309",
            "\x00",
            "\U0001d518\U0001d52b",
        ]
    ),
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _apply(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        copy = dict(doc)
        if not rest and op == "drop":
            copy.pop(head, None)
        else:
            copy[head] = _apply(doc[head], rest, op, value)
        return copy
    copy_list = list(doc)
    if not rest and op == "drop":
        del copy_list[head]
    else:
        copy_list[head] = _apply(doc[head], rest, op, value)
    return copy_list


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """``valid`` with one to three of its values replaced by arbitrary JSON, or dropped."""
    doc = valid
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "drop"])) if path else "replace"
        doc = _apply(doc, path, op, draw(json_values))
    return doc
