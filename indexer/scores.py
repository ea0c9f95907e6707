"""Scores written for people: significant digits, never a fixed number of decimals.

SigLIP probabilities of a real text query are often far below 0.0001 (four decimals would print
0.0000 for every hit), and near 1 the difference between two hits lies in 1 - p (0.99991 against
0.99957). So a score is written with significant digits of p, or of 1 - p when p is above 0.5,
and a list of scores gets as many digits as it takes for neighbours that differ to print
differently (up to the precision of the float32 embeddings they come from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_DIGITS = 4
MAX_DIGITS = 7  # cosines come from float32 vectors: more digits would print rounding noise


def format_score(value: float, digits: int = MIN_DIGITS) -> str:
    """0.98285 -> '0.9829', 3.2145e-05 -> '3.214e-05', 0.9999912 -> '0.9999912' (digits of 1 - p:
    never '1.0000' for a probability below 1), -0.125 -> '-0.125'."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if 0.5 < value < 1.0:
        # the digits that matter are those of 1 - value: 0.99957 has them after three nines
        decimals = digits - 1 - math.floor(math.log10(1.0 - value))
        text = f"{value:.{min(decimals, 15)}f}".rstrip("0")
        return text if float(text) < 1.0 else f"{value:.15f}".rstrip("0")
    return f"{value:.{digits}g}"


def format_scores(values: Sequence[float]) -> list[str]:
    """Each value with format_score, all with the fewest digits (MIN_DIGITS..MAX_DIGITS) at which
    two neighbours that differ do not print the same."""
    for digits in range(MIN_DIGITS, MAX_DIGITS + 1):
        texts = [format_score(v, digits) for v in values]
        if all(
            a != b or float(x) == float(y)
            for a, b, x, y in zip(texts, texts[1:], values, values[1:], strict=False)
        ):
            return texts
    return texts
