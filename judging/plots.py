"""Server-side plots of an analysis report, as SVG bytes (matplotlib, Agg backend).

matplotlib is imported when a plot is drawn, not when a page module is loaded, so pages that draw
nothing stay light. Every function takes plain report data and returns a complete SVG document.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from judging.analysis import AccuracyRow, AccuracyVsRating, Calibration, RatingTable


def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # A Figure without pyplot keeps no global state, so concurrent requests cannot draw on each other.
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _svg(fig) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _empty(message: str) -> bytes:
    fig = _figure(6, 1.2)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555")
    return _svg(fig)


def ratings_plot(table: RatingTable, title: str = "Debater ratings (Elo scale, bootstrap 95% intervals)") -> bytes:
    if not table.ratings:
        return _empty("No ratings: no verdicts on debates between two different debaters.")
    items = list(reversed(table.ratings))
    fig = _figure(7, 0.45 * len(items) + 1.4)
    ax = fig.subplots()
    y = range(len(items))
    elo = [r.elo for r in items]
    ax.errorbar(
        elo,
        list(y),
        xerr=[[r.elo - r.elo_lower for r in items], [r.elo_upper - r.elo for r in items]],
        fmt="o",
        color="#1f5fa8",
        ecolor="#7aa6d6",
        capsize=3,
    )
    ax.set_yticks(list(y), [f"{r.rank}. {r.name}" for r in items])
    ax.axvline(1000, color="#bbb", lw=0.8, ls="--")
    ax.set_xlabel("Elo (1000 = average; 400 points = 10:1 odds)")
    ax.set_title(title, fontsize=11)
    return _svg(fig)


def accuracy_plot(rows: Sequence[AccuracyRow], title: str, reference: dict[str, float] | None = None) -> bytes:
    """Bars of accuracy with Wilson intervals; ``reference`` adds a marker per group (e.g. the paper)."""
    if not rows:
        return _empty("No verdicts in this selection.")
    fig = _figure(7, 0.5 * len(rows) + 1.4)
    ax = fig.subplots()
    items = list(reversed(rows))
    y = list(range(len(items)))
    ax.barh(y, [r.accuracy for r in items], color="#9cc3e6", height=0.6)
    ax.errorbar(
        [r.accuracy for r in items],
        y,
        xerr=[[r.accuracy - r.lower for r in items], [r.upper - r.accuracy for r in items]],
        fmt="none",
        ecolor="#1f5fa8",
        capsize=3,
    )
    if reference:
        ref = [(i, reference[r.key]) for i, r in enumerate(items) if r.key in reference]
        if ref:
            ax.scatter([v for _, v in ref], [i for i, _ in ref], marker="D", color="#c0392b", zorder=3, label="paper")
            ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [f"{r.key} (n={r.n})" for r in items])
    ax.axvline(0.5, color="#bbb", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("judge accuracy (Wilson 95% interval)")
    ax.set_title(title, fontsize=11)
    return _svg(fig)


def accuracy_vs_rating_plot(points: Sequence[AccuracyVsRating]) -> bytes:
    """The literature's headline plot: judge accuracy against the debaters' rating, per protocol."""
    if not points:
        return _empty("Needs rated debaters (debates between two different debaters) and their verdicts.")
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    colours = ["#1f5fa8", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#2c3e50"]
    for i, protocol in enumerate(sorted({p.protocol for p in points})):
        mine = sorted((p for p in points if p.protocol == protocol), key=lambda p: p.elo)
        colour = colours[i % len(colours)]
        ax.errorbar(
            [p.elo for p in mine],
            [p.accuracy for p in mine],
            xerr=[[p.elo - p.elo_lower for p in mine], [p.elo_upper - p.elo for p in mine]],
            yerr=[[p.accuracy - p.lower for p in mine], [p.upper - p.accuracy for p in mine]],
            fmt="o-" if len(mine) > 1 else "o",
            color=colour,
            ecolor=colour,
            alpha=0.85,
            capsize=3,
            label=protocol,
        )
        for p in mine:
            ax.annotate(p.debater, (p.elo, p.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#444")
    ax.axhline(0.5, color="#bbb", lw=0.8, ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("debater rating (Elo)")
    ax.set_ylabel("judge accuracy")
    ax.set_title("Judge accuracy against debater rating", fontsize=11)
    ax.legend(fontsize=8)
    return _svg(fig)


def reliability_plot(cal: Calibration) -> bytes:
    counted = [b for b in cal.bins if b.count]
    if not counted:
        return _empty("No verdicts in this selection.")
    fig = _figure(5.5, 4.5)
    ax = fig.subplots()
    ax.plot([0.5, 1.0], [0.5, 1.0], color="#999", ls="--", lw=1, label="perfect calibration")
    width = (cal.bins[0].upper - cal.bins[0].lower) * 0.9 if cal.bins else 0.05
    ax.bar(
        [(b.lower + b.upper) / 2 for b in counted],
        [b.accuracy for b in counted],
        width=width,
        color="#9cc3e6",
        edgecolor="#1f5fa8",
        label="accuracy in bin",
    )
    ax.plot([b.mean_confidence for b in counted], [b.accuracy for b in counted], "o", color="#1f5fa8", label="mean confidence")
    for b in counted:
        ax.annotate(str(b.count), ((b.lower + b.upper) / 2, b.accuracy), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence in the chosen answer")
    ax.set_ylabel("share correct")
    ece = "-" if math.isnan(cal.ece) else f"{cal.ece:.3f}"
    brier = "-" if math.isnan(cal.brier) else f"{cal.brier:.3f}"
    ax.set_title(f"Reliability (n={cal.n}, ECE {ece}, Brier {brier})", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig)
