"""Readable differences between two values of a label, as pure functions: a line diff of texts (with the
changed words of each changed line), and a structural diff of object values worked out on their stored JSON
text, so big integers, long decimals and key order are shown exactly as stored (never through a float)."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Literal, NamedTuple

# Line diff -----------------------------------------------------------------------------------------------

_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


class Segment(NamedTuple):
    text: str
    changed: bool


class DiffLine(NamedTuple):
    """One line of a line diff: kept (" "), removed ("-") or added ("+"), with its line ending, and its text in
    segments, the changed words marked when the line was replaced by a similar one."""

    op: Literal[" ", "-", "+"]
    text: str
    segments: tuple[Segment, ...]


def _words(old: str, new: str) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    """The two lines in segments, the words only one of them has marked as changed."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    left: list[Segment] = []
    right: list[Segment] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if i2 > i1:
            left.append(Segment("".join(a[i1:i2]), tag != "equal"))
        if j2 > j1:
            right.append(Segment("".join(b[j1:j2]), tag != "equal"))
    return tuple(left), tuple(right)


def line_diff(old: str, new: str) -> list[DiffLine]:
    """Every line of both texts, in order: kept, removed or added. The kept and added lines are the new text,
    the kept and removed ones the old text, character for character (see `side`)."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    lines: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            lines += [DiffLine(" ", line, (Segment(line, False),)) for line in a[i1:i2]]
            continue
        removed, added = a[i1:i2], b[j1:j2]
        # A replaced line paired with its replacement shows which words changed; the rest change whole.
        paired = [_words(x, y) for x, y in zip(removed, added, strict=False)] if tag == "replace" else []
        for n, line in enumerate(removed):
            lines.append(DiffLine("-", line, paired[n][0] if n < len(paired) else (Segment(line, True),)))
        for n, line in enumerate(added):
            lines.append(DiffLine("+", line, paired[n][1] if n < len(paired) else (Segment(line, True),)))
    return lines


def side(lines: list[DiffLine], which: Literal["old", "new"]) -> str:
    """One of the two texts a line diff was made from."""
    dropped = "+" if which == "old" else "-"
    return "".join(line.text for line in lines if line.op != dropped)


class Fold(NamedTuple):
    """Unchanged lines left out of a shown diff."""

    count: int


def with_context(lines: list[DiffLine], context: int = 3) -> list[DiffLine | Fold]:
    """The diff as shown: changed lines with up to `context` unchanged lines around them, longer stretches of
    unchanged lines folded into a count."""
    changed = [n for n, line in enumerate(lines) if line.op != " "]
    if not changed:
        return [Fold(len(lines))] if lines else []
    shown: list[DiffLine | Fold] = []
    kept = set()
    for n in changed:
        kept.update(range(max(0, n - context), min(len(lines), n + context + 1)))
    skipped = 0
    for n, line in enumerate(lines):
        if n in kept:
            if skipped:
                shown.append(Fold(skipped))
                skipped = 0
            shown.append(line)
        else:
            skipped += 1
    if skipped:
        shown.append(Fold(skipped))
    return shown


# Structural diff of JSON values, on their text -----------------------------------------------------------


class Number(str):
    """A JSON number, as the exact text it was written in."""


class Members(list):
    """A JSON object: its (key, value) members in the order written."""


def parse(text: str) -> Any:
    """A JSON text with numbers kept as their text and objects as their members in order."""
    return json.loads(text, parse_int=Number, parse_float=Number, object_pairs_hook=Members)


def render(value: Any, indent: int | None = None, _depth: int = 0) -> str:
    """A parsed value back as JSON: numbers as written, keys in their order; indented when asked."""
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Members):
        items = [f"{json.dumps(key, ensure_ascii=False)}:{' ' if indent else ''}" + render(v, indent, _depth + 1)
                 for key, v in value]  # fmt: skip
        opening, closing = "{", "}"
    else:
        items = [render(v, indent, _depth + 1) for v in value]
        opening, closing = "[", "]"
    if not items:
        return opening + closing
    if indent is None:
        return opening + ",".join(items) + closing
    inner, outer = "\n" + " " * (indent * (_depth + 1)), "\n" + " " * (indent * _depth)
    return opening + inner + ("," + inner).join(items) + outer + closing


class Entry(NamedTuple):
    """One difference between two JSON values: where (a path from the top, `$`), what happened, and the
    value there before and after, rendered as stored."""

    path: str
    kind: Literal["added", "removed", "changed", "reordered"]
    before: str | None
    after: str | None


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _same(a: Any, b: Any) -> bool:
    return render(a) == render(b)


def _is_array(value: Any) -> bool:
    return isinstance(value, list) and not isinstance(value, Members)


def _diff(before: Any, after: Any, path: str, out: list[Entry]) -> None:
    if _same(before, after):
        return
    if isinstance(before, Members) and isinstance(after, Members):
        old, new = dict(before), dict(after)
        for key, value in after:
            if key in old:
                _diff(old[key], value, _key_path(path, key), out)
            else:
                out.append(Entry(_key_path(path, key), "added", None, render(value)))
        out.extend(Entry(_key_path(path, k), "removed", render(v), None) for k, v in before if k not in new)
        shared_order = [k for k, _ in before if k in new], [k for k, _ in after if k in old]
        if shared_order[0] != shared_order[1]:
            out.append(Entry(path, "reordered", ", ".join(shared_order[0]), ", ".join(shared_order[1])))
        return
    if _is_array(before) and _is_array(after):
        _diff_arrays(before, after, path, out)
        return
    out.append(Entry(path, "changed", render(before), render(after)))


def _diff_arrays(before: list, after: list, path: str, out: list[Entry]) -> None:
    """Elements aligned as a sequence, so one inserted element is one addition, not a change of every later one."""
    rendered = [render(v) for v in before], [render(v) for v in after]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, *rendered, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        pairs = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for n in range(pairs):
            _diff(before[i1 + n], after[j1 + n], f"{path}[{j1 + n}]", out)
        out.extend(Entry(f"{path}[{i}]", "removed", rendered[0][i], None) for i in range(i1 + pairs, i2))
        out.extend(Entry(f"{path}[{j}]", "added", None, rendered[1][j]) for j in range(j1 + pairs, j2))


def json_diff(before_text: str, after_text: str) -> list[Entry]:
    """What differs between two stored JSON texts, path by path: added and removed keys and elements, changed
    values, and objects whose keys came in another order. Empty when the two are the same value as stored."""
    out: list[Entry] = []
    _diff(parse(before_text), parse(after_text), "$", out)
    return out
