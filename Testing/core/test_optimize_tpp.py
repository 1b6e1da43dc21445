"""Treatment planning parameters (optimize/tpp.py): vector layout, bounds, random starts, JSON forms."""

import json

import numpy as np
import pytest

from radagent.errors import InputError
from radagent.evaluate.scorecard import PROSTATE
from radagent.geometry import Grid
from radagent.optimize.objectives import SquaredUnderdose, TppDoseVolume
from radagent.optimize.tpp import COVERAGE_WEIGHT, TPPs, tpp_oar_names, tpp_objectives
from radagent.patient import Case, Protocol, Structure

OARS = ("Bladder", "Rectum")


def test_default_is_the_sources_start_vector():
    tpps = TPPs.default(OARS)
    assert tpps.to_list() == [1, 1, 1, 1, 1, 1, 0.1, 1, 1]
    assert tpps.names == (
        "t_PTV",
        "t_Bladder",
        "t_Rectum",
        "lambda_PTV",
        "lambda_Bladder",
        "lambda_Rectum",
        "V_PTV",
        "V_Bladder",
        "V_Rectum",
    )
    assert (
        tpps.thresholds == (1, 1, 1) and tpps.priorities == (1, 1, 1) and tpps.volume_fractions == (0.1, 1, 1)
    )
    assert len(TPPs.default(("A", "B", "C", "D", "E")).values) == 18


def test_bounds_and_clipping():
    low, high = TPPs.bounds(2)
    np.testing.assert_array_equal(low, [1.0, 0, 0, 1e-3, 1e-3, 1e-3, 0, 0, 0])
    np.testing.assert_array_equal(high, [1.2, 1, 1, 1e5, 1e5, 1e5, 0.3, 1, 1])
    clipped = TPPs(OARS, (2.0, -1.0, 0.5, 0.0, 1e6, 3.0, 0.5, 2.0, 0.2))
    assert clipped.to_list() == [1.2, 0.0, 0.5, 1e-3, 1e5, 3.0, 0.3, 1.0, 0.2]
    with pytest.raises(InputError, match="need 9 TPP values"):
        TPPs(OARS, (1.0,) * 8)
    with pytest.raises(InputError, match="finite"):
        TPPs(OARS, (np.nan,) * 9)


def test_random_starts_follow_the_sources_ranges_and_the_seed():
    draws = np.array([TPPs.random(OARS, np.random.default_rng(seed)).values for seed in range(200)])
    assert np.all((draws[:, 0] >= 1.0) & (draws[:, 0] <= 1.2))
    assert np.all((draws[:, 1:3] >= 0.0) & (draws[:, 1:3] <= 1.0))
    assert np.all((draws[:, 3:6] >= 1e-3) & (draws[:, 3:6] <= 30.0))
    assert np.all(draws[:, 6] <= 0.3) and np.all(draws[:, 7:] <= 1.0)
    assert draws[:, 3:6].max() > 25.0  # λ really spans U(0, 30)
    same = TPPs.random(OARS, np.random.default_rng(7)), TPPs.random(OARS, np.random.default_rng(7))
    assert same[0] == same[1]


def test_json_round_trips_and_single_edits():
    tpps = TPPs.random(OARS, np.random.default_rng(1))
    assert TPPs.from_dict(json.loads(json.dumps(tpps.to_dict()))) == tpps
    assert TPPs.from_list(OARS, json.loads(json.dumps(tpps.to_list()))) == tpps
    edited = tpps.with_value("lambda_Rectum", 12.5)
    assert edited.priorities[2] == 12.5 and edited.values[:5] == tpps.values[:5]
    assert tpps.with_value("t_PTV", 5.0).thresholds[0] == 1.2
    with pytest.raises(InputError, match="unknown TPP"):
        tpps.with_value("t_Liver", 0.5)
    with pytest.raises(InputError, match="missing"):
        TPPs.from_dict({"t_PTV": 1.0, "t_Bladder": 1.0})


def test_tpp_objectives_build_method_terms():
    tpps = TPPs(OARS, (1.05, 0.8, 0.6, 2.0, 4.0, 1.0, 0.1, 0.5, 0.3))
    terms = tpp_objectives(tpps, "PTV", 70.0)
    assert terms[:3] == (
        TppDoseVolume("PTV", pytest.approx(73.5), 0.1, 1.0),
        TppDoseVolume("Bladder", pytest.approx(56.0), 0.5, 2.0),
        TppDoseVolume("Rectum", pytest.approx(42.0), 0.3, 0.5),
    )
    assert terms[3] == SquaredUnderdose("PTV", 70.0, COVERAGE_WEIGHT)
    assert COVERAGE_WEIGHT == 2.0


def test_tpp_oars_come_from_the_score_card_in_case_order():
    shape = (3, 6, 6)
    grid = Grid.from_spacing(shape, (3.0, 3.0, 3.0))

    def block(j):
        mask = np.zeros(shape, bool)
        mask[1, j, 2:4] = True
        return mask

    structures = [
        Structure("PTV", "target", block(2)),
        Structure("Femur", "oar", block(0)),
        Structure("Rectum", "oar", block(4)),
        Structure("Bladder", "oar", block(1)),
        Structure("Body", "body", np.ones(shape, bool)),
    ]
    with_card = Case("c", np.zeros(shape), grid, structures, Protocol(79.2, 44, PROSTATE))
    assert tpp_oar_names(with_card) == ("Rectum", "Bladder")
    without_card = Case("c", np.zeros(shape), grid, structures, Protocol(79.2, 44))
    assert tpp_oar_names(without_card) == ("Femur", "Rectum", "Bladder")
