"""The console's readable diffs (projections.diff), the CSV export's formula guard and the activity chart: pure
functions, held to rules that hold for every input (Hypothesis) and to a few exact examples."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from projections.diff import Entry, Fold, Members, Number, json_diff, line_diff, parse, render, side, with_context
from service.http.console.chart import SERIES, svg
from service.http.console.downloads import spreadsheet_safe
from service.usecases.activity import Chart

lines_of_text = st.lists(st.sampled_from(["a", "b", "c", "the cat", "sat", "", " ", "\t", "é", "😀"]), max_size=12).map(
    lambda parts: "".join(part + end for part, end in zip(parts, ["\n", "\r\n", "\n"] * 4, strict=False))
)
texts = st.one_of(st.text(max_size=80), lines_of_text)

# JSON values as a client may send them: big integers and decimals whose exact digits matter, Unicode, nesting.
numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=20).map(lambda d: format(d, "f")),
    st.sampled_from(["0", "-0", "1e400", "2.50", "1E-7", "0.98765432109876543210"]),
)
keys = st.text(alphabet="abcxyz _.[]\"'é😀", min_size=0, max_size=6)
leaves = st.one_of(st.sampled_from(["null", "true", "false"]), st.text(max_size=10).map(json.dumps), numbers)
json_texts = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(lambda items: "[" + ",".join(items) + "]"),
        st.dictionaries(keys, inner, max_size=5).map(
            lambda members: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in members.items()) + "}"
        ),
    ),
    max_leaves=20,
)


@given(texts, texts)
def test_a_line_diff_gives_back_both_texts_exactly(old, new):
    diff = line_diff(old, new)
    assert side(diff, "new") == new
    assert side(diff, "old") == old


@given(texts, texts)
def test_the_words_of_a_diff_line_make_the_line(old, new):
    for line in line_diff(old, new):
        assert "".join(segment.text for segment in line.segments) == line.text


@given(texts)
def test_a_text_diffed_with_itself_changes_nothing(text):
    assert all(line.op == " " for line in line_diff(text, text))


@given(texts, texts, st.integers(min_value=0, max_value=5))
def test_a_shown_diff_folds_unchanged_lines_and_loses_none(old, new, context):
    diff = line_diff(old, new)
    shown = with_context(diff, context)
    assert sum(item.count if isinstance(item, Fold) else 1 for item in shown) == len(diff)
    assert [line for line in shown if not isinstance(line, Fold) and line.op != " "] == [
        line for line in diff if line.op != " "
    ]


def test_a_replaced_line_marks_the_changed_words():
    removed, added = (
        line for line in line_diff("The cat sat\non the mat.", "The cat sat\non a mat.") if line.op != " "
    )
    assert [s.text for s in removed.segments if s.changed] == ["the"]
    assert [s.text for s in added.segments if s.changed] == ["a"]


@given(json_texts)
def test_a_value_diffed_with_itself_is_empty(text):
    assert json_diff(text, text) == []


@given(json_texts)
def test_rendering_keeps_the_stored_text_but_insignificant_whitespace(text):
    compact = render(parse(text))
    assert json.loads(compact, parse_float=Decimal) == json.loads(text, parse_float=Decimal)
    assert render(parse(compact)) == compact
    assert json.loads(render(parse(text), indent=2), parse_float=Decimal) == json.loads(text, parse_float=Decimal)


@given(json_texts, json_texts)
def test_a_diff_is_empty_exactly_when_the_stored_values_are_the_same(before, after):
    assert (json_diff(before, after) == []) == (render(parse(before)) == render(parse(after)))


_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _at(value, path: str):
    """The value a diff entry's path names."""
    assert path.startswith("$")
    rest = path[1:]
    while rest:
        step = _STEP.match(rest)
        assert step, f"unreadable path {path!r}"
        name, index, quoted = step.groups()
        if index is not None:
            value = value[int(index)]
        else:
            value = dict(value)[name if name is not None else json.loads(quoted)]
        rest = rest[step.end() :]
    return value


@given(json_texts, json_texts)
def test_every_entry_of_a_diff_is_true_of_the_two_values(before, after):
    old, new = parse(before), parse(after)
    for entry in json_diff(before, after):
        if entry.kind in ("added", "changed"):
            assert render(_at(new, entry.path)) == entry.after
        if entry.kind == "removed":
            assert render(_at(old, entry.path)) == entry.before
        if entry.kind == "reordered":
            assert isinstance(_at(new, entry.path), Members)


@given(numbers, numbers)
def test_big_numbers_survive_a_diff_digit_for_digit(first, second):
    diff = json_diff(f'{{"score":{first}}}', f'{{"score":{second}}}')
    assert diff == ([] if first == second else [Entry("$.score", "changed", first, second)])


def test_an_object_diff_keeps_key_order_big_numbers_and_array_positions():
    before = '{"model":"m1","score":0.98765432109876543210,"tags":["a","b"],"n":123456789012345678901234567890}'
    after = (
        '{"score":0.98765432109876543211,"model":"m1","tags":["a","x","b"],"n":123456789012345678901234567890,"q":{}}'
    )
    assert json_diff(before, after) == [
        Entry("$.score", "changed", "0.98765432109876543210", "0.98765432109876543211"),
        Entry("$.tags[1]", "added", None, '"x"'),
        Entry("$.q", "added", None, "{}"),
        Entry("$", "reordered", "model, score, tags, n", "score, model, tags, n"),
    ]
    assert json_diff('{"a b":1,"c":[1]}', '{"a b":2}') == [
        Entry('$["a b"]', "changed", "1", "2"),
        Entry("$.c", "removed", "[1]", None),
    ]
    assert json_diff("[1,2]", '{"0":1}') == [Entry("$", "changed", "[1,2]", '{"0":1}')]
    assert isinstance(parse("1.0"), Number) and render(parse("1.0")) == "1.0"


@given(st.text(max_size=30))
def test_no_csv_cell_starts_a_formula_and_none_loses_its_text(cell):
    safe = spreadsheet_safe(cell)
    assert not safe.startswith(("=", "+", "-", "@", "\t", "\r", "\n"))
    assert safe == cell or safe == "'" + cell


def test_formula_cells_are_quoted_and_others_left_alone():
    assert (
        spreadsheet_safe('=HYPERLINK("http://evil.example","click")') == '\'=HYPERLINK("http://evil.example","click")'
    )
    assert spreadsheet_safe("-5") == "'-5" and spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert spreadsheet_safe("the cat") == "the cat" and spreadsheet_safe("") == ""


actors = st.lists(st.text(alphabet="abcdefgh<>&\"'", min_size=1, max_size=6), unique=True, max_size=12)


@given(actors, st.integers(min_value=1, max_value=40), st.data())
def test_the_chart_is_well_formed_svg_with_a_bar_segment_per_count(names, day_count, data):
    days = [f"2026-01-{n + 1:02d}" if n < 31 else f"2026-02-{n - 30:02d}" for n in range(day_count)]
    counts = {
        day: {name: data.draw(st.integers(min_value=0, max_value=50)) for name in names}
        for day in data.draw(st.lists(st.sampled_from(days), unique=True))
    }
    chart = Chart(days=days, actors=names, counts=counts, clipped=False)
    markup = svg(chart, "Changes <per> day")
    root = ElementTree.fromstring(markup)
    assert "style=" not in markup and "<script" not in markup
    segments = root.findall("{http://www.w3.org/2000/svg}rect")
    drawn = min(len(names), SERIES)
    expected = 0
    for per_actor in counts.values():
        named = [per_actor.get(name, 0) for name in names[: drawn if len(names) <= SERIES else SERIES - 1]]
        others = sum(per_actor.get(name, 0) for name in names[SERIES - 1 :]) if len(names) > SERIES else 0
        expected += sum(1 for count in named if count) + (1 if others else 0)
    assert len(segments) == expected
