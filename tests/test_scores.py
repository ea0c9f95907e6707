"""Scores as people read them: the CLI never prints two different scores the same, nor a
probability below 1 as 1."""

from __future__ import annotations

import pytest

from indexer.scores import MAX_DIGITS, format_score, format_scores


@pytest.mark.parametrize(
    "values",
    [
        [3.2145e-05, 3.2139e-05, 2.9e-05, 1.2e-09],  # a real text query on a small model
        [0.99991, 0.99957, 0.9957, 0.873],  # near 1 the digits are those of 1 - p
        [0.4832706, 0.4832701, 0.31],  # cosines
        [0.1, 0.0999999, -0.125],
    ],
)
def test_neighbours_that_differ_never_print_the_same(values):
    texts = format_scores(values)
    assert len(set(texts)) == len(values), texts
    for text, value in zip(texts, values, strict=True):  # each still reads as its value
        assert float(text) == pytest.approx(value, rel=1e-3)


def test_a_probability_below_one_never_prints_as_one_and_four_decimals_are_not_the_rule():
    assert float(format_score(0.9999912)) < 1.0
    assert format_score(3.2146e-05) == "3.215e-05"  # not 0.0000
    assert format_score(0.98285) == "0.98285"
    assert format_score(1.0) == "1" and format_score(-0.125) == "-0.125"


def test_equal_scores_print_equal_and_digits_stop_at_float32_precision():
    assert format_scores([0.5, 0.5]) == ["0.5", "0.5"]
    texts = format_scores([0.123456789, 0.123456788])
    assert len(texts[0]) <= len("0.") + MAX_DIGITS
