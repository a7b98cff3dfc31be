"""Evaluation metrics against small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pointsman.learning import metrics as M

# Four prompts, columns (weak, strong): strong wins on 0 and 3, ties on 1, loses on 2.
QUALITY = np.array([[0, 1], [1, 1], [1, 0], [0, 1]], dtype=float)


def test_deployment_curve_sends_highest_scores_to_strong_first() -> None:
    curve = M.threshold_curve(np.array([0.9, 0.5, 0.7, 0.1]), QUALITY)
    assert curve.cost.tolist() == [0, 0.25, 0.5, 0.75, 1]
    # Order p0 (+1), p2 (-1), p1 (0), p3 (+1): quality 0.5 -> 0.75 -> 0.5 -> 0.5 -> 0.75.
    assert curve.quality == pytest.approx([0.5, 0.75, 0.5, 0.5, 0.75])
    assert M.pgr(curve, QUALITY) == pytest.approx([0, 1, 0, 0, 1])
    # Trapezoids of width 0.25 over PGR 0,1,0,0,1.
    assert M.apgr(curve, QUALITY) == pytest.approx(0.375)
    assert M.cpt(curve, QUALITY, 0.5) == pytest.approx(0.125)
    assert M.cpt(curve, QUALITY, 1.5) is None


def test_random_router_is_the_straight_line_with_apgr_one_half() -> None:
    curve = M.threshold_curve(np.zeros(4), QUALITY)
    assert curve.quality == pytest.approx([0.5, 0.5625, 0.625, 0.6875, 0.75])
    assert M.apgr(curve, QUALITY) == pytest.approx(0.5)
    assert M.cpt(curve, QUALITY, 0.8) == pytest.approx(0.8)


def test_oracle_sends_only_strong_wins_to_strong() -> None:
    curve = M.threshold_curve(M.oracle_scores(QUALITY), QUALITY)
    assert curve.quality == pytest.approx([0.5, 0.75, 1.0, 1.0, 0.75])
    # PGR 0, 1, 2, 2, 1.
    assert M.apgr(curve, QUALITY) == pytest.approx(1.375)


def test_tied_scores_are_averaged_over_their_order() -> None:
    curve = M.threshold_curve(np.array([0.5, 0.5, 0.9, 0.1]), QUALITY)
    # p2 (-1) first, then the tied block {p0 (+1), p1 (0)} interpolated, then p3 (+1).
    assert curve.quality == pytest.approx([0.5, 0.25, 0.375, 0.5, 0.75])


# Two prompts, three models costing 1, 2 and 4 per call.
COST = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
TRUE = np.array([[0, 1, 1], [1, 0, 1]], dtype=float)
PRED = np.array([[0.2, 0.5, 0.6], [0.5, 0.4, 0.9]])


def test_lambda_sweep_switches_each_prompt_at_its_breakpoints() -> None:
    # Prompt A walks m0 -> m1 at lambda 0.3 -> m2 at 0.05; prompt B m0 -> m2 at 0.4/3.
    curve = M.lambda_curve(PRED, COST, TRUE)
    assert curve.cost == pytest.approx([1.0, 1.5, 3.0, 4.0])
    assert curve.quality == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_cost_quality_numbers_against_the_best_single_model() -> None:
    curve = M.lambda_curve(PRED, COST, TRUE)
    report = M.cost_quality_report(curve, ["m0", "m1", "m2"], COST, TRUE)
    assert report.best_model == "m2"
    assert report.best_quality == 1.0
    assert report.cost_to_100 == pytest.approx(1.5 / 4)
    assert report.cost_to_95 == pytest.approx(1.45 / 4)
    assert report.quality_at_best_cost == pytest.approx(1.0)
    # Hull (1, .5) -> (1.5, 1) then flat to 4, over the single-model span [1, 4].
    assert report.aiq == pytest.approx((0.5 * 0.75 + 2.5 * 1.0) / 3)


def test_random_reference_mixes_single_models_on_their_hull() -> None:
    hull = M.random_curve(COST, TRUE)
    # m1 (cost 2, quality .5) is dominated by m0 (cost 1, quality .5).
    assert hull.cost.tolist() == [1.0, 4.0]
    assert hull.quality.tolist() == [0.5, 1.0]


def test_oracle_many_models_picks_the_cheapest_right_model() -> None:
    curve = M.lambda_curve(TRUE, COST, TRUE)
    assert curve.cost[-1] == pytest.approx(1.5)
    assert curve.quality[-1] == pytest.approx(1.0)


def test_monotone_hull_drops_points_under_the_chord() -> None:
    hull = M.monotone_hull(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 0.4, 1.0, 0.9]))
    # (1, 0.4) lies under the chord from (0, 0) to (2, 1); (3, 0.9) loses quality.
    assert hull.cost.tolist() == [0.0, 2.0]
    assert hull.quality.tolist() == [0.0, 1.0]
