"""Objective values and gradients (optimize/objectives.py): finite differences and hand-computed TPP terms."""

import numpy as np
import pytest

from radagent.optimize.objectives import (
    Geud,
    HottestOverdose,
    MaxDose,
    MaxDvh,
    MeanDose,
    MinDose,
    MinDvh,
    SquaredOverdose,
    SquaredUnderdose,
    TppDoseVolume,
)
from radagent.optimize.vectors import dot

OBJECTIVES = [
    SquaredUnderdose("S", 60.0, weight=1.5),
    SquaredOverdose("S", 50.0, weight=0.7),
    MeanDose("S", 40.0, weight=2.0),
    MaxDose("S", 60.0, softness_gy=1.0),
    MinDose("S", 55.0, softness_gy=1.0),
    MinDvh("S", 58.0, volume_fraction=0.6),
    MaxDvh("S", 45.0, volume_fraction=0.3),
    Geud("S", 40.0, a=8.0),
    Geud("S", 62.0, a=-10.0, weight=3.0),
    TppDoseVolume("S", 50.0, volume_fraction=0.4, weight=2.0),
    HottestOverdose("S", 50.0, volume_fraction=0.4, scale=0.1),
]


def random_doses(size: int = 40) -> np.ndarray:
    return np.random.default_rng(11).uniform(30.0, 70.0, size)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: type(o).__name__)
def test_gradient_matches_central_differences(objective):
    dose = random_doses()
    value, gradient = objective.value_and_gradient(dose)
    assert value > 0, "the test point must be on the penalized side"
    step = 1e-5
    numeric = np.empty_like(dose)
    for i in range(dose.size):
        up, down = dose.copy(), dose.copy()
        up[i] += step
        down[i] -= step
        numeric[i] = (objective.value_and_gradient(up)[0] - objective.value_and_gradient(down)[0]) / (
            2 * step
        )
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-7 * max(1.0, abs(value)))


MEAN_SQUARED = (SquaredUnderdose, SquaredOverdose, MinDvh, MaxDvh, TppDoseVolume, HottestOverdose)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: type(o).__name__)
def test_curvature_is_the_gauss_newton_diagonal_on_the_penalized_side(objective):
    dose = random_doses()
    value, gradient = objective.value_and_gradient(dose)
    curvature = objective.curvature(dose)
    assert curvature.shape == dose.shape and np.all(curvature >= 0)
    if isinstance(objective, MEAN_SQUARED):
        # piecewise quadratic: the exact ∂²f/∂dᵢ² on the penalized voxels, the same value everywhere
        penalized = np.flatnonzero(gradient)
        step = 1e-4
        for i in penalized:
            up, down = dose.copy(), dose.copy()
            up[i] += step
            down[i] -= step
            numeric = (objective.value_and_gradient(up)[1][i] - objective.value_and_gradient(down)[1][i]) / (
                2 * step
            )
            assert curvature[i] == pytest.approx(numeric, rel=1e-6)
        assert np.ptp(curvature) == 0.0
    else:
        # f = weight · r(d)²: the Gauss–Newton diagonal 2·weight·(∂r/∂dᵢ)² equals (∂f/∂dᵢ)² / (2f)
        np.testing.assert_allclose(curvature, gradient**2 / (2 * value), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize(
    "objective",
    [
        SquaredOverdose("S", 50.0, weight=0.7),
        TppDoseVolume("S", 50.0, volume_fraction=0.4, weight=2.0),
        HottestOverdose("S", 50.0, volume_fraction=0.4, scale=0.1),
    ],
)
def test_only_upper_limits_ignore_the_doses_below_their_reference(objective):
    dose = random_doses()
    assert objective.inert_below_gy == 50.0
    below = dose <= 50.0
    lowered = np.where(below, np.random.default_rng(2).uniform(0.0, 50.0, dose.size), dose)
    value, gradient = objective.value_and_gradient(dose)
    lowered_value, lowered_gradient = objective.value_and_gradient(lowered)
    assert lowered_value == value
    np.testing.assert_array_equal(lowered_gradient, gradient)
    others = [o for o in OBJECTIVES if not isinstance(o, SquaredOverdose | TppDoseVolume | HottestOverdose)]
    assert all(o.inert_below_gy is None for o in others)


def test_chain_rule_through_the_influence_matrix():
    rng = np.random.default_rng(5)
    matrix = rng.uniform(0, 1, (30, 8)) * (rng.uniform(0, 1, (30, 8)) < 0.4)
    weights = rng.uniform(0.5, 2.0, 8)
    objective = SquaredOverdose("S", 1.0)

    def f(x):
        return objective.value_and_gradient(matrix @ x)[0]

    gradient = matrix.T @ objective.value_and_gradient(matrix @ weights)[1]
    numeric = [(f(weights + 1e-6 * e) - f(weights - 1e-6 * e)) / 2e-6 for e in np.eye(8)]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-9)


def test_objectives_vanish_on_the_right_side():
    dose = np.full(10, 50.0)
    for objective in (
        SquaredUnderdose("S", 40.0),
        SquaredOverdose("S", 60.0),
        MeanDose("S", 55.0),
        MaxDose("S", 60.0),
        MinDose("S", 40.0),
        MinDvh("S", 45.0, 0.9),
        MaxDvh("S", 55.0, 0.1),
        Geud("S", 55.0, a=4.0),
        TppDoseVolume("S", 55.0, 0.5),
    ):
        value, gradient = objective.value_and_gradient(dose)
        assert value == 0.0 and not np.any(gradient), type(objective).__name__


def test_tpp_term_hand_computed():
    dose = np.arange(1.0, 11.0)  # 1 … 10 Gy
    # V = 0.3: the hottest 3 voxels (8, 9, 10 Gy), all above 5 Gy: (3² + 4² + 5²)/3, times the weight
    term = TppDoseVolume("S", threshold_gy=5.0, volume_fraction=0.3, weight=2.0)
    assert term.value_and_gradient(dose)[0] == pytest.approx(2.0 * 50 / 3)
    # V = 0.8: D(V) = 3 Gy, so Ω⁺ = {6 … 10 Gy}: (1 + 4 + 9 + 16 + 25)/5
    value, gradient = TppDoseVolume("S", 5.0, 0.8).value_and_gradient(dose)
    assert value == pytest.approx(11.0)
    np.testing.assert_allclose(gradient, [0, 0, 0, 0, 0, 0.4, 0.8, 1.2, 1.6, 2.0])
    # empty Ω⁺ (nothing above the threshold) and V = 0 contribute 0
    assert TppDoseVolume("S", 20.0, 0.5).value_and_gradient(dose)[0] == 0.0
    assert TppDoseVolume("S", 0.0, 0.0).value_and_gradient(dose)[0] == 0.0
    # ties at D(V) belong to Ω⁺
    tied = np.array([1.0, 6.0, 6.0, 6.0, 9.0])
    assert TppDoseVolume("S", 5.0, 0.4).value_and_gradient(tied)[0] == pytest.approx((1 + 1 + 1 + 16) / 4)


def test_frozen_tpp_term_fixes_only_the_normalization():
    dose = np.arange(1.0, 11.0)
    term = TppDoseVolume("S", 5.0, 0.8, weight=3.0)
    frozen = term.frozen(dose)
    assert isinstance(frozen, HottestOverdose)
    assert frozen.scale == pytest.approx(3.0 / 5)
    assert frozen.value_and_gradient(dose)[0] == pytest.approx(term.value_and_gradient(dose)[0])
    hotter = dose + np.r_[np.zeros(5), np.ones(5)]  # same Ω⁺, larger overdoses: same 1/|Ω⁺|
    assert frozen.value_and_gradient(hotter)[0] == pytest.approx(term.value_and_gradient(hotter)[0])
    cooler = np.minimum(dose, 7.0)  # Ω⁺ = {6, 7, 7, 7, 7 Gy}: smaller overdoses, still 1/5
    assert frozen.value_and_gradient(cooler)[0] == pytest.approx(3.0 / 5 * (1 + 4 * 4))
    nothing_above = TppDoseVolume("S", 20.0, 0.5, weight=2.0).frozen(dose)
    assert nothing_above.scale == pytest.approx(2.0 / 5)  # normalized by the hottest V when Ω⁺ is empty


def test_soft_extremes_bound_the_true_extremes():
    dose = random_doses(200)
    soft_max = MaxDose("S", 0.0, softness_gy=0.5).value_and_gradient(dose)[0] ** 0.5
    assert dose.max() <= soft_max <= dose.max() + 0.5 * np.log(dose.size)
    soft_min = 100.0 - MinDose("S", 100.0, softness_gy=0.5).value_and_gradient(dose)[0] ** 0.5
    assert dose.min() - 0.5 * np.log(dose.size) <= soft_min <= dose.min()
    with pytest.raises(ValueError, match="non-zero exponent"):
        Geud("S", 10.0, a=0.0)


@pytest.mark.parametrize("volume_fraction", [0.0, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("threshold_gy", [-1.0, 0.2, 0.5, 0.8, 2.0])
def test_omega_plus_is_the_hottest_fraction_above_the_threshold(volume_fraction, threshold_gy):
    """Ω⁺ without the whole-structure partial sort equals its definition, ties included, and so do the
    overdoses on it that the TPP terms square."""
    from radagent.evaluate.dvh import hottest_minimum_gy
    from radagent.optimize.objectives import _hottest_overdose

    rng = np.random.default_rng(7)
    for dose in (rng.uniform(0.0, 1.0, 1001), np.round(rng.uniform(0.0, 1.0, 500), 1)):
        expected = (
            np.zeros(dose.size, bool)
            if volume_fraction <= 0
            else (dose >= hottest_minimum_gy(dose, volume_fraction)) & (dose > threshold_gy)
        )
        excess = np.where(expected, dose - threshold_gy, 0.0)
        for weight, per_member in ((0.3, False), (0.3, True)):
            value, gradient, count = _hottest_overdose(
                dose, threshold_gy, volume_fraction, weight, per_member
            )
            assert count == np.count_nonzero(expected)
            scale = weight / max(count, 1) if per_member else weight
            np.testing.assert_array_equal(gradient, 2.0 * scale * excess)
            assert value == scale * dot(excess, excess)


@pytest.mark.parametrize("volume_fraction", [0.0, 0.05, 0.4, 1.0])
def test_tpp_terms_ignore_doses_at_or_below_their_inert_level(volume_fraction):
    """What the solver may skip is truly inert: moving voxels anywhere at or below ``inert_below_gy``
    changes neither the TPP term's value nor its gradient, frozen or not."""
    from radagent.optimize.objectives import TppDoseVolume

    rng = np.random.default_rng(3)
    dose = rng.uniform(0.0, 2.0, 800)
    term = TppDoseVolume("S", 1.2, volume_fraction, 3.0)
    level = term.inert_below_gy
    assert level == (1.2 if volume_fraction > 0 else np.inf)
    moved = dose.copy()
    low = dose <= level
    moved[low] = rng.uniform(-5.0, 1.0, low.sum()) * np.minimum(level, 10.0)
    moved[low] = np.minimum(moved[low], level)
    if np.isfinite(level):
        moved[np.flatnonzero(low)[:20]] = level  # exactly at the level: still outside Ω⁺
    for objective in (term, term.frozen(dose)):
        assert objective.inert_below_gy == level
        value, gradient = objective.value_and_gradient(dose)
        moved_value, moved_gradient = objective.value_and_gradient(moved)
        assert moved_value == value
        np.testing.assert_array_equal(moved_gradient, gradient)
