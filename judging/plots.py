"""Server-side plots of an analysis report, as SVG bytes (matplotlib, Agg backend).

matplotlib is imported when a plot is drawn, not when a page module is loaded, so pages that draw
nothing stay light. Each plot has a ``*_figure`` function that takes plain report data and returns
the matplotlib Figure (tests measure what is drawn: overlaps, clipping) and a ``*_plot`` function
that returns it as a complete SVG document. Points and bars carry an SVG ``<title>`` with their
values, which browsers show on hover, and link to the debates behind them when given a ``link``.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar
from xml.sax.saxutils import escape

from judging.analysis import AccuracyRow, AccuracyVsRating, Calibration, RatingTable

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

TOO_FEW = "#999999"
T = TypeVar("T")
# item -> URL of the debates behind it (the filtered debate list), or None for no link
Link = Callable[[T], str | None] | None


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure without pyplot keeps no global state, so concurrent requests cannot draw on each other;
    # its Agg canvas measures text, so labels can be moved apart before the SVG is written.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# Hover texts of each live figure, by the gid of the artist they belong to.
_TIPS: weakref.WeakKeyDictionary[Figure, dict[str, str]] = weakref.WeakKeyDictionary()


def _tip(artist: Artist, number: int, text: str, url: str | None = None) -> None:
    """Give ``artist`` (already on a figure) a hover title in the SVG :func:`svg` writes, and a
    link (the debates behind the point) when ``url`` is given."""
    gid = f"tip{number}"
    artist.set_gid(gid)
    if url:
        artist.set_url(url)
    _TIPS.setdefault(artist.get_figure(root=True), {})[gid] = text  # type: ignore[arg-type]


def svg(fig: Figure) -> bytes:
    """The figure as SVG, with a ``<title>`` (hover text) inside every group marked by :func:`_tip`."""
    titles = _TIPS.get(fig, {})
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode()

    def add_title(match: re.Match[str]) -> str:
        gid = match.group(1)
        return f'{match.group(0)}<title>{escape(titles[gid])}</title>' if gid in titles else match.group(0)

    text = re.sub(r'<g id="(tip\d+)"[^>]*>', add_title, text)
    # matplotlib opens links in a new tab; these open in the page (not inside the <object>).
    return text.replace(' target="_blank"', ' target="_top"').encode()


def empty_figure(message: str) -> Figure:
    """A message in place of a plot, wrapped so that all of it shows."""
    lines = textwrap.wrap(message, 70) or [""]
    fig = _figure(6.5, 0.35 * len(lines) + 0.5)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=11, color="#555", transform=ax.transAxes)
    return fig


def _fmt(value: float, digits: int = 0) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def ratings_figure(
    table: RatingTable, title: str = "Debater ratings (Elo scale, bootstrap 95% intervals)", link: Link[str] = None
) -> Figure:
    """Elo with intervals per player, best at the top; ``link(name)`` is the URL of its debates."""
    if not table.ratings:
        return empty_figure("No ratings: no verdicts on debates between two different debaters.")
    items = list(reversed(table.ratings))
    fig = _figure(7, 0.45 * len(items) + 1.4)
    ax = fig.subplots()
    for y, r in enumerate(items):
        if r.too_few_games:
            point = ax.plot([r.elo], [y], "o", mfc="white", mec=TOO_FEW)[0]
            tip = f"{r.name}: Elo {_fmt(r.elo)}, too few games ({r.games:g})"
        else:
            # An interval always contains its estimate (analysis.fit_ratings); max() keeps rounding dust out.
            point = ax.errorbar(
                [r.elo], [y], xerr=[[max(0.0, r.elo - r.elo_lower)], [max(0.0, r.elo_upper - r.elo)]],
                fmt="o", color="#1f5fa8", ecolor="#7aa6d6", capsize=3,
            ).lines[0]
            tip = f"{r.name}: Elo {_fmt(r.elo)} [{_fmt(r.elo_lower)}, {_fmt(r.elo_upper)}], {r.games:g} games, {r.wins:g} wins"
        _tip(point, y, tip, link(r.name) if link else None)
    ax.set_yticks(
        list(range(len(items))),
        [f"{r.name} (too few games)" if r.too_few_games else f"{r.rank}. {r.name}" for r in items],
    )
    ax.axvline(1000, color="#bbb", lw=0.8, ls="--")
    ax.set_xlabel("Elo (1000 = average; 400 points = 10:1 odds)")
    ax.set_title(title, fontsize=11)
    return fig


def ratings_plot(
    table: RatingTable, title: str = "Debater ratings (Elo scale, bootstrap 95% intervals)", link: Link[str] = None
) -> bytes:
    return svg(ratings_figure(table, title, link))


def accuracy_figure(
    rows: Sequence[AccuracyRow], title: str, reference: dict[str, float] | None = None, link: Link[str] = None
) -> Figure:
    """Bars of accuracy with Wilson intervals; ``reference`` adds a marker per group (e.g. the paper);
    ``link(group)`` is the URL of the group's debates."""
    if not rows:
        return empty_figure("No verdicts in this selection.")
    fig = _figure(7, 0.5 * len(rows) + 1.6)
    ax = fig.subplots()
    items = list(reversed(rows))
    y = list(range(len(items)))
    bars = ax.barh(y, [r.accuracy for r in items], color="#9cc3e6", height=0.6)
    for i, (bar, r) in enumerate(zip(bars, items)):
        _tip(bar, i, f"{r.key}: {r.accuracy:.1%} [{r.lower:.1%}, {r.upper:.1%}], {r.correct} of {r.n} correct", link(r.key) if link else None)
    ax.errorbar(
        [r.accuracy for r in items],
        y,
        xerr=[[max(0.0, r.accuracy - r.lower) for r in items], [max(0.0, r.upper - r.accuracy) for r in items]],
        fmt="none",
        ecolor="#1f5fa8",
        capsize=3,
    )
    if reference:
        ref = [(i, reference[r.key]) for i, r in enumerate(items) if r.key in reference]
        if ref:
            ax.scatter([v for _, v in ref], [i for i, _ in ref], marker="D", color="#c0392b", zorder=3, label="paper")
            fig.legend(loc="outside lower right", fontsize=8)
    ax.set_yticks(y, [f"{r.key} (n={r.n})" for r in items])
    ax.axvline(0.5, color="#bbb", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("judge accuracy (Wilson 95% interval)")
    ax.set_title(title, fontsize=11)
    return fig


def accuracy_plot(
    rows: Sequence[AccuracyRow], title: str, reference: dict[str, float] | None = None, link: Link[str] = None
) -> bytes:
    return svg(accuracy_figure(rows, title, reference, link))


def _place_labels(fig: Figure, labels: Sequence[object]) -> None:
    """Move point labels apart until no two overlap, none covers a point or the title, and each
    stays inside the axes: a label that collides steps down, then up, by its own height."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # an Agg canvas (_figure)
    ax = fig.axes[0]
    bounds = ax.get_window_extent(renderer)
    points = ax.transData.transform([label.xy for label in labels])  # type: ignore[attr-defined]
    placed = [ax.title.get_window_extent(renderer)] + [Bbox.from_extents(x - 4, y - 4, x + 4, y + 4) for x, y in points]
    for label in labels:
        base = label.xyann  # type: ignore[attr-defined]
        height = label.get_window_extent(renderer).height or 10.0
        offsets = [0.0] + [s * k * (height * 0.75 + 1) for k in range(1, 40) for s in (-1, 1)]
        # Labels stay inside the axes, so the layout need not make room for them.
        label.set_in_layout(False)  # type: ignore[attr-defined]
        found = False
        # Right of the point first, then left of it (near the right edge).
        for align, dx in (("left", base[0]), ("right", -base[0])):
            label.set_horizontalalignment(align)  # type: ignore[attr-defined]
            for dy in offsets:
                label.xyann = (dx, base[1] + dy)  # type: ignore[attr-defined]
                box = label.get_window_extent(renderer)
                inside = bounds.x0 <= box.x0 and box.x1 <= bounds.x1 and bounds.y0 <= box.y0 and box.y1 <= bounds.y1
                if inside and not any(box.overlaps(other) for other in placed):
                    found = True
                    break
            if found:
                break
        if not found:
            # Nowhere free: overlap rather than leave the plot.
            label.set_horizontalalignment("left")  # type: ignore[attr-defined]
            label.xyann = base  # type: ignore[attr-defined]
        placed.append(label.get_window_extent(renderer))


def accuracy_vs_rating_figure(points: Sequence[AccuracyVsRating], link: Link[AccuracyVsRating] = None) -> Figure:
    """The literature's headline plot: judge accuracy against the debaters' rating, per protocol.
    Points are not joined (debaters are not a series); labels are moved apart so none overlap;
    ``link(point)`` is the URL of the point's debates."""
    if not points:
        return empty_figure("Needs rated debaters (debates between two different debaters) and their verdicts.")
    fig = _figure(7.5, 4.8)
    ax = fig.subplots()
    colours = ["#1f5fa8", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#2c3e50"]
    labels = []
    tip = 0
    for i, protocol in enumerate(sorted({p.protocol for p in points})):
        mine = sorted((p for p in points if p.protocol == protocol), key=lambda p: p.elo)
        colour = colours[i % len(colours)]
        first = True
        for p in mine:
            xerr = None if p.too_few_games else [[max(0.0, p.elo - p.elo_lower)], [max(0.0, p.elo_upper - p.elo)]]
            drawn = ax.errorbar(
                [p.elo], [p.accuracy], xerr=xerr, yerr=[[max(0.0, p.accuracy - p.lower)], [max(0.0, p.upper - p.accuracy)]],
                fmt="o", color=colour, ecolor=colour, alpha=0.85, capsize=3, mfc="white" if p.too_few_games else colour,
                label=protocol if first else None,
            )
            first = False
            rating = "too few games" if p.too_few_games else f"Elo {p.elo:.0f} [{_fmt(p.elo_lower)}, {_fmt(p.elo_upper)}]"
            _tip(drawn.lines[0], tip, f"{p.debater} ({protocol}): {rating}; accuracy {p.accuracy:.1%} [{p.lower:.1%}, {p.upper:.1%}], n={p.n}",
                 link(p) if link else None)
            tip += 1
            labels.append(ax.annotate(p.debater, (p.elo, p.accuracy), textcoords="offset points", xytext=(5, -3), fontsize=7, color="#444"))
    ax.axhline(0.5, color="#bbb", lw=0.8, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("debater rating (Elo); hollow: too few games for an interval")
    ax.set_ylabel("judge accuracy")
    ax.set_title("Judge accuracy against debater rating", fontsize=11)
    fig.legend(loc="outside lower center", ncols=min(4, len({p.protocol for p in points})), fontsize=8)
    fig.canvas.draw()
    _place_labels(fig, labels)
    return fig


def accuracy_vs_rating_plot(points: Sequence[AccuracyVsRating], link: Link[AccuracyVsRating] = None) -> bytes:
    return svg(accuracy_vs_rating_figure(points, link))


def reliability_figure(cal: Calibration) -> Figure:
    counted = [b for b in cal.bins if b.count]
    if not counted:
        return empty_figure("No verdicts in this selection.")
    fig = _figure(5.5, 5.0)
    ax = fig.subplots()
    ax.plot([0.5, 1.0], [0.5, 1.0], color="#999", ls="--", lw=1, label="perfect calibration")
    width = (cal.bins[0].upper - cal.bins[0].lower) * 0.9 if cal.bins else 0.05
    bars = ax.bar(
        [(b.lower + b.upper) / 2 for b in counted],
        [b.accuracy for b in counted],
        width=width,
        color="#9cc3e6",
        edgecolor="#1f5fa8",
        label="accuracy in bin",
    )
    for i, (bar, b) in enumerate(zip(bars, counted)):
        _tip(bar, i, f"confidence {b.lower:.2f}–{b.upper:.2f}: {b.count} verdicts, {b.accuracy:.1%} correct, mean confidence {b.mean_confidence:.3f}")
    ax.plot([b.mean_confidence for b in counted], [b.accuracy for b in counted], "o", color="#1f5fa8", label="mean confidence")
    for b in counted:
        ax.annotate(str(b.count), ((b.lower + b.upper) / 2, b.accuracy), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence in the chosen answer")
    ax.set_ylabel("share correct")
    ece = "-" if math.isnan(cal.ece) else f"{cal.ece:.3f}"
    brier = "-" if math.isnan(cal.brier) else f"{cal.brier:.3f}"
    ax.set_title(f"Reliability (n={cal.n}, ECE {ece}, Brier {brier})", fontsize=11)
    # Below the axes, never over a bar.
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    return fig


def reliability_plot(cal: Calibration) -> bytes:
    return svg(reliability_figure(cal))
