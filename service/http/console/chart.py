"""The activity chart, drawn by goldtrail as SVG markup: changes per day, stacked by actor. No script and no
style attribute (the console's Content-Security-Policy allows neither inline): colours come from the console's
stylesheet through classes, and each bar says what it counts in a <title>."""

from __future__ import annotations

from html import escape

from service.usecases.activity import Chart

WIDTH, HEIGHT = 800, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
SERIES = 8  # colours in the stylesheet (.series-0 .. .series-7); further actors are drawn together as "others"
OTHERS = "others"


def series(chart: Chart) -> list[str]:
    """The actors drawn with a colour each, in order; the rest are summed as OTHERS."""
    if len(chart.actors) <= SERIES:
        return list(chart.actors)
    return [*chart.actors[: SERIES - 1], OTHERS]


def _counts(chart: Chart, day: str, drawn: list[str]) -> list[int]:
    per_actor = chart.counts.get(day, {})
    named = [per_actor.get(actor, 0) for actor in drawn if actor != OTHERS]
    if OTHERS in drawn:
        named.append(sum(count for actor, count in per_actor.items() if actor not in drawn))
    return named


def _nice_top(largest: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at or above the tallest bar: the y axis's top."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if magnitude * step >= largest:
                return magnitude * step
        magnitude *= 10


def svg(chart: Chart, title: str) -> str:
    """The chart as an <svg> element: one bar per day, a segment per actor, the y axis up to a round number."""
    drawn = series(chart)
    days = chart.days
    stacks = [_counts(chart, day, drawn) for day in days]
    top = _nice_top(max((sum(stack) for stack in stacks), default=0) or 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(_description(chart, drawn, stacks))}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top:,}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    label_every = max(1, round(len(days) / 8))
    for n, (day, stack) in enumerate(zip(days, stacks, strict=True)):
        x = LEFT + n * slot + (slot - bar) / 2
        y = TOP + plot_h
        for index, (actor, count) in enumerate(zip(drawn, stack, strict=True)):
            if not count:
                continue
            height = plot_h * count / top
            y -= height
            parts.append(
                f'<rect class="series-{index}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}">'
                f"<title>{escape(day)}: {escape(actor)}, {count:,} change{'' if count == 1 else 's'}</title></rect>"
            )
        if n % label_every == 0:
            parts.append(
                f'<text class="tick" x="{LEFT + n * slot + slot / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(day[5:])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _description(chart: Chart, drawn: list[str], stacks: list[list[int]]) -> str:
    totals = [sum(stack[index] for stack in stacks) for index in range(len(drawn))]
    if not chart.days:
        return "No days to show."
    who = ", ".join(f"{actor} {total:,}" for actor, total in zip(drawn, totals, strict=True)) or "nobody"
    return f"Changes per day from {chart.days[0]} to {chart.days[-1]}, by actor: {who}."
