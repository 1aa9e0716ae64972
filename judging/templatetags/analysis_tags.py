"""Formatting for the analysis pages."""

from __future__ import annotations

import math

from django import template

register = template.Library()


@register.filter
def percent(value: object, digits: int = 1) -> str:
    """0.8441 -> "84.4%"; NaN or missing -> "–"."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if math.isnan(number):
        return "–"
    return f"{number * 100:.{int(digits)}f}%"


@register.filter
def number(value: object, digits: int = 3) -> str:
    """A float with ``digits`` decimals; NaN or missing -> "–"."""
    try:
        n = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if math.isnan(n) or math.isinf(n):
        return "–"
    return f"{n:.{int(digits)}f}"
