"""The plan pipeline end to end: normalization on the CT grid, determinism, cache reuse, cancellation."""

import itertools

import numpy as np
import pytest

from radagent.cases import load_case
from radagent.dose import DoseEngineSettings, DoseInfluenceCache
from radagent.errors import InputError
from radagent.evaluate.dvh import hottest_minimum_gy
from radagent.evaluate.metrics import dose_on_ct_grid
from radagent.plan import PlanSettings, plan_case
from radagent.progress import Cancelled

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=6.0)


@pytest.fixture(scope="module")
def prostate():
    return load_case("prostate")


def test_optimized_plan_is_normalized_to_d95_on_the_ct_grid(prostate):
    settings = PlanSettings(angles_deg=(0.0, 90.0, 180.0, 270.0), engine=COARSE, objective_set="tpp")
    result = plan_case(prostate, settings)
    target_dose = result.dose_ct_gy[prostate.structure("PTV").mask]
    assert hottest_minimum_gy(target_dose, 0.95) == pytest.approx(prostate.prescription_gy, rel=1e-5)
    metrics = result.metrics()
    assert metrics["structures"]["PTV"]["d95_gy"] == pytest.approx(79.2, rel=1e-4)
    assert metrics["plan"]["score_max"] == 9
    assert metrics["dij"]["n_beamlets"] == result.weights.size
    # The stored weights reproduce the stored dose (the rescale is applied to both).
    recomputed = result.dose_influence.dose_volume(result.weights)
    again = dose_on_ct_grid(recomputed, result.dose_influence.dose_grid, prostate.grid)
    np.testing.assert_allclose(again, result.dose_ct_gy, rtol=1e-4, atol=1e-3)
    description = result.plan_description()
    assert description["tpps"]["t_PTV"] == pytest.approx(1.0)
    assert [beam["gantry_deg"] for beam in description["beams"]] == [0.0, 90.0, 180.0, 270.0]


def test_uniform_fluence_puts_the_target_mean_at_the_prescription(prostate):
    result = plan_case(
        prostate, PlanSettings(angles_deg=(0.0, 120.0, 240.0), engine=COARSE, fluence="uniform")
    )
    target_dose = result.dose_ct_gy[prostate.structure("PTV").mask]
    assert float(np.mean(target_dose)) == pytest.approx(prostate.prescription_gy, rel=1e-5)
    assert np.allclose(result.weights, result.weights[0])
    assert result.optimization is None and result.tpps is None


def test_same_inputs_give_the_same_plan_and_the_cache_is_reused(prostate):
    cache = DoseInfluenceCache()
    settings = PlanSettings(angles_deg=(30.0, 150.0, 270.0), engine=COARSE)
    first = plan_case(prostate, settings, cache=cache)
    misses = cache.misses
    second = plan_case(prostate, settings, cache=cache)
    assert cache.misses == misses and cache.hits >= 3
    np.testing.assert_array_equal(first.weights, second.weights)
    assert first.metrics()["plan"] == second.metrics()["plan"]


def test_progress_is_monotone_and_cancel_stops_the_plan(prostate):
    fractions = []

    def record(fraction, message):
        fractions.append(fraction)
        return True

    plan_case(prostate, PlanSettings(angles_deg=(0.0, 180.0), engine=COARSE), progress=record)
    assert fractions[-1] == 1.0 and all(b >= a for a, b in itertools.pairwise(fractions))

    def cancel_during_optimization(fraction, message):
        return fraction < 0.65

    with pytest.raises(Cancelled):
        plan_case(
            prostate,
            PlanSettings(angles_deg=(0.0, 180.0), engine=COARSE),
            progress=cancel_during_optimization,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"angles_deg": (0.0, 0.0)}, "duplicate"),
        ({"angles_deg": (0.0, 360.0)}, "out of range"),
        ({"angles_deg": ()}, "at least one beam"),
        ({"fluence": "sculpted"}, "fluence mode"),
    ],
)
def test_bad_plan_settings_are_rejected(kwargs, message):
    with pytest.raises(InputError, match=message):
        PlanSettings(**kwargs)
