"""Score cards: linear criteria, the built-in cards, the smooth score (evaluate/scorecard.py)."""

import math

import numpy as np
import pytest

from radagent.errors import InputError
from radagent.evaluate.dvh import StructureDoses
from radagent.evaluate.scorecard import (
    CSHAPE,
    LIVER,
    PROSTATE,
    PROSTATE_4OAR,
    WATER,
    Criterion,
    CriterionResult,
    card_by_name,
    smooth_score,
    total_score,
)

P_GY = 79.2


def fraction_above(name: str, level_gy: float, fraction: float, count: int = 1000) -> StructureDoses:
    """A structure in which exactly ``fraction`` of the voxels get ``level_gy`` + 0.5 Gy, the rest 0."""
    doses = np.zeros(count)
    doses[: round(fraction * count)] = level_gy + 0.5
    return StructureDoses(name, doses, 0.001)


def uniform(name: str, dose_gy: float, count: int = 1000) -> StructureDoses:
    """A structure with one dose everywhere (so every Dx is that dose)."""
    return StructureDoses(name, np.full(count, dose_gy), 0.001)


def results_for(card, doses):
    return card.evaluate(doses, P_GY)


def test_built_in_cards_have_their_sizes_and_sources():
    assert (PROSTATE.max_score, PROSTATE_4OAR.max_score, LIVER.max_score) == (9.0, 15.0, 4.0)
    assert (CSHAPE.max_score, WATER.max_score) == (3.0, 1.0)
    assert PROSTATE.structures() == ("PTV", "Bladder", "Rectum")
    assert set(PROSTATE_4OAR.structures()) == {
        "PTV",
        "Bladder",
        "Rectum",
        "FemoralHead_L",
        "FemoralHead_R",
        "Bowel",
    }
    assert LIVER.structures() == ("PTV", "Liver", "Stomach", "SpinalCord")
    assert CSHAPE.structures() == ("PTV", "Core")
    for card in (PROSTATE, PROSTATE_4OAR, LIVER, CSHAPE, WATER):
        assert card.source
    assert card_by_name("Prostate") is PROSTATE
    assert card_by_name(" cshape ") is CSHAPE
    with pytest.raises(InputError, match="unknown score card"):
        card_by_name("brain")


def test_prostate_card_matches_method_table():
    bladder = [c for c in PROSTATE.criteria if c.structure == "Bladder"]
    rectum = [c for c in PROSTATE.criteria if c.structure == "Rectum"]
    assert [c.dose_level for c in bladder] == [1.01, 0.947, 0.884, 0.821]
    assert [c.dose_level for c in rectum] == [0.947, 0.884, 0.821, 0.758]
    assert [(c.full_credit, c.zero_credit) for c in bladder] == [
        (0.15, 0.20),
        (0.25, 0.30),
        (0.35, 0.40),
        (0.50, 0.55),
    ]
    hot = PROSTATE.criteria[0]
    assert (hot.structure, hot.metric, hot.full_credit, hot.zero_credit, hot.hot_spot) == (
        "PTV",
        "D0.03cc",
        1.07,
        1.10,
        True,
    )


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.10, 1.0), (0.15, 1.0), (0.175, 0.5), (0.20, 0.0), (0.30, 0.0)]
)
def test_volume_criterion_scores_linearly_between_thresholds(fraction, expected):
    criterion = PROSTATE.criteria[1]  # Bladder V(1.01p) ≤ 15 % full, ≥ 20 % zero
    doses = fraction_above("Bladder", 1.01 * P_GY, fraction)
    value = criterion.value(doses, P_GY)
    assert value == pytest.approx(fraction)
    assert criterion.subscore(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("hot_spot", "expected"), [(1.0, 1.0), (1.07, 1.0), (1.085, 0.5), (1.10, 0.0), (1.2, 0.0)]
)
def test_hot_spot_criterion(hot_spot, expected):
    criterion = PROSTATE.criteria[0]
    value = criterion.value(uniform("PTV", hot_spot * P_GY), P_GY)
    assert value == pytest.approx(hot_spot)
    assert criterion.subscore(value) == pytest.approx(expected)


def test_perfect_and_failing_prostate_plans():
    perfect = {
        "PTV": uniform("PTV", P_GY),
        "Bladder": uniform("Bladder", 10.0),
        "Rectum": uniform("Rectum", 10.0),
    }
    results = results_for(PROSTATE, perfect)
    assert total_score(results) == 9.0
    failing = {
        "PTV": uniform("PTV", 1.2 * P_GY),
        "Bladder": uniform("Bladder", P_GY * 1.02),
        "Rectum": uniform("Rectum", P_GY),
    }
    assert total_score(results_for(PROSTATE, failing)) == 0.0
    with pytest.raises(InputError, match="needs structure 'Rectum'"):
        PROSTATE.evaluate({"PTV": perfect["PTV"], "Bladder": perfect["Bladder"]}, P_GY)


def test_higher_is_better_goal_and_other_metrics():
    d95 = CSHAPE.criteria[0]  # PTV D95 ≥ 1.0 p full, ≤ 0.95 p zero
    assert not d95.lower_is_better
    assert d95.subscore(1.02) == 1.0
    assert d95.subscore(0.975) == pytest.approx(0.5)
    assert d95.subscore(0.9) == 0.0
    liver_mean = LIVER.criteria[1]
    assert liver_mean.value(uniform("Liver", 30.0), 50.0) == pytest.approx(0.6)
    assert liver_mean.subscore(0.6) == pytest.approx(0.5)
    bowel = PROSTATE_4OAR.criteria[-2]  # V15Gy ≤ 120 cc
    doses = StructureDoses("Bowel", np.r_[np.full(100, 20.0), np.zeros(100)], 1.35)  # 135 cc ≥ 15 Gy
    assert bowel.value(doses, P_GY) == pytest.approx(135.0)
    assert bowel.subscore(135.0) == pytest.approx(0.5)


def test_criterion_validation_and_names():
    with pytest.raises(ValueError, match="unknown metric"):
        Criterion("PTV", "Dfoo", 1.0, 1.1)
    with pytest.raises(ValueError, match="equal"):
        Criterion("PTV", "D95", 1.0, 1.0)
    with pytest.raises(ValueError, match="dose_level"):
        Criterion("Bladder", "V", 0.1, 0.2)
    assert PROSTATE.criteria[1].metric_name == "V(1.01p)"
    assert PROSTATE.criteria[1].describe() == "Bladder V(1.01p)"
    result = CriterionResult(PROSTATE.criteria[1], 0.175, 0.5)
    assert result.to_dict() == {
        "label": "Bladder V(1.01p)",
        "structure": "Bladder",
        "metric": "V(1.01p)",
        "value": 0.175,
        "full_credit": 0.15,
        "zero_credit": 0.2,
        "subscore": 0.5,
    }


def _smooth_term(value: float, midpoint: float, width: float = 0.05) -> float:
    return math.atan(-(value - midpoint) / width) / math.pi + 0.5


def test_smooth_score_formula():
    hot, bladder1 = PROSTATE.criteria[0], PROSTATE.criteria[1]
    # cool hot spot (h ≤ 1.05) adds 6; an OAR criterion at its midpoint adds exactly 0.5
    assert smooth_score([CriterionResult(hot, 1.04, 1.0)]) == 6.0
    assert smooth_score([CriterionResult(bladder1, 0.175, 0.5)]) == pytest.approx(0.5)
    # h = 1.075 is the arctan's centre: 8 · 0.5
    assert smooth_score([CriterionResult(hot, 1.075, 0.83)]) == pytest.approx(4.0)
    h = 1.09
    expected_hot = 8 * (math.atan(-(h - 1.075) / 0.08) / math.pi + 0.5)
    assert smooth_score([CriterionResult(hot, h, 0.33)]) == pytest.approx(expected_hot)
    # at or beyond the zero-credit limit an OAR criterion adds nothing
    assert smooth_score([CriterionResult(bladder1, 0.20, 0.0)]) == 0.0
    results = [
        CriterionResult(hot, 1.0, 1.0),
        CriterionResult(bladder1, 0.10, 1.0),
        CriterionResult(bladder1, 0.25, 0.0),
    ]
    assert smooth_score(results) == pytest.approx(6.0 + _smooth_term(0.10, 0.175))
    # a goal (higher is better) is mirrored: above its midpoint scores more than 0.5
    d95 = CSHAPE.criteria[0]
    assert smooth_score([CriterionResult(d95, 0.99, 1.0)]) > 0.5
    assert smooth_score([CriterionResult(d95, 0.94, 0.0)]) == 0.0
