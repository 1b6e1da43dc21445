"""Dose objectives for fluence optimization (METHOD §3): penalties on one structure's voxel doses.

Every objective maps the doses d (Gy) of its structure's voxels on the dose grid to a value in Gy² and
its gradient ∂f/∂d; the solver chains it to the beamlet weights as Aᵀ·∂f/∂d. Each also gives the
curvature ∂²f/∂d² that a voxel adds on the penalized side, from which the solver sets the beamlet
weights' natural scales.

The TPP term's normalization 1/|Ω⁺| jumps with the dose, so the solver *freezes* it once per outer
iteration (:meth:`Objective.frozen`). Our choice, against freezing the Ω⁺ sets themselves as the sources
do: with Ω⁺ re-selected at every evaluation, each inner problem is convex (a sum of the largest squared
overdoses) and tangent to f at the outer iterate, whereas fixed sets let the voxels outside them rise
unpenalized and make the outer iterations oscillate. The DVH objectives re-select their sets at every
evaluation, as in matRad.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from radagent.evaluate.dvh import hottest_minimum_gy, hottest_voxel_count
from radagent.optimize.vectors import compiled_dot, dot, maximum_zero

__all__ = [
    "HOTTEST_OVERDOSE",
    "NO_PENALTY",
    "SQUARED_VIOLATION",
    "CompiledTerm",
    "Geud",
    "HottestOverdose",
    "MaxDose",
    "MaxDvh",
    "MeanDose",
    "MinDose",
    "MinDvh",
    "Objective",
    "SquaredOverdose",
    "SquaredUnderdose",
    "TppDoseVolume",
    "compiled_term_value_and_gradient",
    "frozen_parameters",
    "frozen_scale",
]

_GEUD_FLOOR_GY = 1e-3  # doses are clamped to this in gEUD so that negative exponents stay finite


HOTTEST_OVERDOSE, SQUARED_VIOLATION, NO_PENALTY = range(3)  # kinds of CompiledTerm


@dataclass(frozen=True)
class CompiledTerm:
    """An objective as compiled code evaluates it (:func:`compiled_term_value_and_gradient`): its kind
    and up to three numbers, and a voxel count where the kind needs one. The numbers are taken in float64,
    as the objectives' own methods take them (parameters are Python floats)."""

    kind: int
    parameters: tuple[float, ...] = ()
    count: int = 0


class Objective(ABC):
    """A penalty on the doses (Gy) of the voxels of structure ``structure``, with its dose gradient."""

    structure: str
    needs_outer_iterations: ClassVar[bool] = False  # True when :meth:`frozen` fixes a part that jumps

    @abstractmethod
    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        """Value (Gy²) and gradient with respect to each voxel dose of the structure."""

    @abstractmethod
    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        """The Gauss–Newton diagonal of ∂²f/∂dᵢ² on the penalized side: the curvature each voxel adds
        when it breaks the limit (exact there for the squared penalties), whether or not it does now."""

    def frozen(self, dose_gy: np.ndarray) -> Objective:
        """The objective for one outer iteration, its jumping parts fixed at ``dose_gy`` (usually itself)."""
        return self

    @property
    def inert_below_gy(self) -> float | None:
        """A dose at or below which a voxel adds nothing to f or its gradient, whatever the other voxels
        get, so the solver need not know it exactly; None when every voxel's dose counts."""
        return None

    def compiled_term(self, voxel_count: int) -> CompiledTerm | None:
        """This objective on a structure of ``voxel_count`` voxels as compiled code evaluates it, the
        very same operations; None when it has no compiled form (the solver then calls it from Python)."""
        return None


@njit(cache=True)
def _squared_violation_kernel(dose_gy, reference_gy, side, weight):  # pragma: no cover - compiled
    """weight · mean of max(0, side · (d − reference))² and its gradient, each operation rounded as its
    numpy form (np.maximum, einsum's dot, the scalar factor first) was."""
    violation = np.empty(dose_gy.size)
    for i in range(dose_gy.size):
        violation[i] = maximum_zero(side * (dose_gy[i] - reference_gy))
    scale = weight / dose_gy.size
    total = scale * compiled_dot(violation, violation)
    factor = 2.0 * side * scale
    for i in range(violation.size):
        violation[i] = factor * violation[i]
    return total, violation


@dataclass(frozen=True)
class _MeanSquaredViolation(Objective):
    """weight · mean over voxels of max(0, side · (d − reference))²: a dose limit on every voxel, upper
    (side +1) or lower (side −1)."""

    structure: str
    reference_gy: float
    weight: float = 1.0
    _side: ClassVar[float]

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        dose = np.ascontiguousarray(dose_gy, dtype=np.float64)
        return _squared_violation_kernel(dose, float(self.reference_gy), self._side, float(self.weight))

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        return _mean_square_curvature(self.weight, dose_gy.size)

    def compiled_term(self, voxel_count: int) -> CompiledTerm:
        return CompiledTerm(SQUARED_VIOLATION, (self.reference_gy, self._side, self.weight))


@dataclass(frozen=True)
class SquaredUnderdose(_MeanSquaredViolation):
    """weight · mean over voxels of max(0, reference − d)²: a lower dose limit for targets."""

    _side = -1.0


@dataclass(frozen=True)
class SquaredOverdose(_MeanSquaredViolation):
    """weight · mean over voxels of max(0, d − reference)²: an upper dose limit on every voxel."""

    _side = 1.0

    @property
    def inert_below_gy(self) -> float:
        return self.reference_gy


@dataclass(frozen=True)
class MeanDose(Objective):
    """weight · max(0, mean(d) − reference)²: an upper limit on the structure's mean dose."""

    structure: str
    reference_gy: float
    weight: float = 1.0

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        excess = max(float(np.mean(dose_gy)) - self.reference_gy, 0.0)
        gradient = np.full(dose_gy.size, 2.0 * self.weight * excess / dose_gy.size)
        return self.weight * excess * excess, gradient

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        return np.full(dose_gy.size, 2.0 * self.weight / dose_gy.size**2)


def _mean_square_curvature(weight: float, voxel_count: int) -> np.ndarray:
    """∂²/∂dᵢ² of weight · mean of squared violations, for a voxel on the penalized side."""
    return np.full(voxel_count, 2.0 * weight / voxel_count)


def _soft_extreme(dose_gy: np.ndarray, softness_gy: float, sign: float) -> tuple[float, np.ndarray]:
    """Log-sum-exp soft maximum (sign +1) or minimum (sign −1) and its gradient (softmax weights)."""
    scaled = sign * dose_gy / softness_gy
    peak = float(np.max(scaled))
    exponentials = np.exp(scaled - peak)
    total = float(np.sum(exponentials))
    return sign * softness_gy * (peak + np.log(total)), exponentials / total


@dataclass(frozen=True)
class _SoftExtremeLimit(Objective):
    """weight · max(0, side · (extremeₛ(d) − reference))², extremeₛ the log-sum-exp soft maximum (side
    +1) or minimum (side −1)."""

    structure: str
    reference_gy: float
    weight: float = 1.0
    softness_gy: float = 0.5
    _side: ClassVar[float]

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        extreme, weights = _soft_extreme(dose_gy, self.softness_gy, self._side)
        violation = max(self._side * (extreme - self.reference_gy), 0.0)
        return self.weight * violation * violation, 2.0 * self._side * self.weight * violation * weights

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        return 2.0 * self.weight * _soft_extreme(dose_gy, self.softness_gy, self._side)[1] ** 2


@dataclass(frozen=True)
class MaxDose(_SoftExtremeLimit):
    """weight · max(0, maxₛ(d) − reference)², maxₛ the log-sum-exp soft maximum.

    maxₛ = s·ln Σ exp(dᵢ/s) is smooth and lies between max(d) and max(d) + s·ln N, so the limit is
    slightly conservative; ``softness_gy`` (s) trades smoothness for exactness.
    """

    _side = 1.0


@dataclass(frozen=True)
class MinDose(_SoftExtremeLimit):
    """weight · max(0, reference − minₛ(d))², minₛ the log-sum-exp soft minimum (≤ min(d))."""

    _side = -1.0


@dataclass(frozen=True)
class Geud(Objective):
    """weight · (gEUD − reference)² on the wrong side: above it for a ≥ 1 (OARs), below for a < 1 (targets).

    gEUD = (mean dᵢᵃ)^(1/a) (Niemierko); doses are floored at 1 mGy so negative a stays finite.
    """

    structure: str
    reference_gy: float
    a: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.a == 0:
            raise ValueError(f"gEUD objective on '{self.structure}' needs a non-zero exponent a")

    def _gap_and_slope(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        """How far gEUD is on the wrong side of the reference (≤ 0: not at all), and ∂gEUD/∂dᵢ."""
        dose = np.maximum(dose_gy, _GEUD_FLOOR_GY)
        powered = dose**self.a
        mean_power = float(np.mean(powered))
        geud = mean_power ** (1.0 / self.a)
        gap = geud - self.reference_gy if self.a >= 1 else self.reference_gy - geud
        slope = geud / (dose_gy.size * mean_power) * powered / dose
        slope[dose_gy < _GEUD_FLOOR_GY] = 0.0
        return gap, slope

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        gap, slope = self._gap_and_slope(dose_gy)
        if gap <= 0:
            return 0.0, np.zeros(dose_gy.size)
        sign = 1.0 if self.a >= 1 else -1.0
        return self.weight * gap * gap, 2.0 * self.weight * gap * sign * slope

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        return 2.0 * self.weight * self._gap_and_slope(dose_gy)[1] ** 2


@dataclass(frozen=True)
class _DvhLimit(Objective):
    """weight · (1/N)·Σ (side · (dᵢ − reference))² over the voxels a DVH limit re-chooses at every
    evaluation (matRad / Bortfeld form): side −1 a minimum, +1 a maximum."""

    structure: str
    reference_gy: float
    volume_fraction: float
    weight: float = 1.0
    _side: ClassVar[float]

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        d_v = hottest_minimum_gy(dose_gy, self.volume_fraction)
        chosen = dose_gy >= d_v if self._side < 0 else dose_gy < d_v
        violation = np.where(chosen, np.maximum(self._side * (dose_gy - self.reference_gy), 0.0), 0.0)
        scale = self.weight / dose_gy.size
        return scale * dot(violation, violation), 2.0 * self._side * scale * violation

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        return _mean_square_curvature(self.weight, dose_gy.size)


@dataclass(frozen=True)
class MinDvh(_DvhLimit):
    """At least ``volume_fraction`` of the structure should get ≥ reference (matRad / Bortfeld form).

    weight · (1/N)·Σ (reference − dᵢ)² over the voxels of the hottest ``volume_fraction`` that are below
    the reference, the set re-chosen at every evaluation.
    """

    _side = -1.0


@dataclass(frozen=True)
class MaxDvh(_DvhLimit):
    """At most ``volume_fraction`` of the structure should get > reference (matRad / Bortfeld form).

    weight · (1/N)·Σ (dᵢ − reference)² over the voxels above the reference outside the hottest
    ``volume_fraction`` (those that must come down for the limit to hold), re-chosen at every evaluation.
    """

    _side = 1.0


@njit(cache=True)
def _hottest_overdose_kernel(dose_gy, threshold_gy, count, weight, per_member):  # pragma: no cover
    """Σ over Ω⁺ of scale·(dᵢ − threshold)², its gradient and |Ω⁺|; Ω⁺ the hottest ``count`` voxels (ties
    included) that are above the threshold; scale = ``weight``, or ``weight``/|Ω⁺| when ``per_member``
    (an empty Ω⁺ then gives 0). One pass counts the voxels above; only when they are more than
    ``count`` is the count-th hottest of them found (a partial sort of that subset, not of the
    structure). Each operation is rounded as its numpy form was."""
    above = 0
    for i in range(dose_gy.size):
        if dose_gy[i] > threshold_gy:
            above += 1
    floor = -np.inf
    if above > count:
        hot = np.empty(above)
        j = 0
        for i in range(dose_gy.size):
            if dose_gy[i] > threshold_gy:
                hot[j] = dose_gy[i]
                j += 1
        floor = np.partition(hot, above - count)[above - count]
    excess = np.zeros(dose_gy.size)
    members = 0
    for i in range(dose_gy.size):
        if dose_gy[i] > threshold_gy and dose_gy[i] >= floor:
            excess[i] = dose_gy[i] - threshold_gy
            members += 1
    if per_member and members == 0:
        return 0.0, excess, 0
    scale = weight / members if per_member else weight
    value = scale * compiled_dot(excess, excess)
    twice = 2.0 * scale
    for i in range(excess.size):
        excess[i] = twice * excess[i]
    return value, excess, members


def _hottest_overdose(
    dose_gy: np.ndarray, threshold_gy: float, volume_fraction: float, weight: float, per_member: bool
) -> tuple[float, np.ndarray, int]:
    """Value, gradient and |Ω⁺| of a squared overdose on Ω⁺, the hottest ``volume_fraction`` (ties
    included) above ``threshold_gy`` (empty when the fraction is 0), weighted by ``weight`` or, with
    ``per_member``, by ``weight``/|Ω⁺|."""
    if volume_fraction <= 0:
        return 0.0, np.zeros(dose_gy.size), 0
    count = hottest_voxel_count(volume_fraction, dose_gy.size)
    dose = np.ascontiguousarray(dose_gy, dtype=np.float64)
    return _hottest_overdose_kernel(dose, float(threshold_gy), count, float(weight), per_member)


def _hottest_overdose_term(
    threshold_gy: float, volume_fraction: float, weight: float, per_member: bool, voxel_count: int
) -> CompiledTerm:
    """The compiled form of :func:`_hottest_overdose` on ``voxel_count`` voxels."""
    if volume_fraction <= 0:
        return CompiledTerm(NO_PENALTY)
    count = hottest_voxel_count(volume_fraction, voxel_count)
    return CompiledTerm(HOTTEST_OVERDOSE, (threshold_gy, weight, 1.0 if per_member else 0.0), count)


@njit(cache=True)
def frozen_scale(dose_gy, threshold_gy, count, weight):  # pragma: no cover - compiled
    """weight/|Ω⁺| at ``dose_gy`` (Ω⁺ of the hottest ``count`` voxels), or weight/``count`` while nothing
    is above the threshold (normalized by the whole hottest volume): the fixed scale of a frozen TPP
    term (:meth:`TppDoseVolume.frozen`)."""
    _, _, members = _hottest_overdose_kernel(dose_gy, threshold_gy, count, 0.0, False)
    return weight / (members if members > 0 else count)


@njit(cache=True)
def frozen_parameters(kind, parameters, count, dose_gy):  # pragma: no cover - compiled
    """The compiled form of :meth:`Objective.frozen`: a per-member TPP term's parameters with its scale
    fixed at ``dose_gy``; any other term's unchanged."""
    if kind == HOTTEST_OVERDOSE and parameters[2] != 0.0:
        return np.array([parameters[0], frozen_scale(dose_gy, parameters[0], count, parameters[1]), 0.0])
    return parameters.copy()


@njit(cache=True)
def compiled_term_value_and_gradient(kind, parameters, count, dose_gy):  # pragma: no cover - compiled
    """Value and gradient of a :class:`CompiledTerm` (kind, parameters, count) at its structure's doses."""
    if kind == HOTTEST_OVERDOSE:
        value, gradient, _ = _hottest_overdose_kernel(
            dose_gy, parameters[0], count, parameters[1], parameters[2] != 0.0
        )
        return value, gradient
    if kind == SQUARED_VIOLATION:
        return _squared_violation_kernel(dose_gy, parameters[0], parameters[1], parameters[2])
    return 0.0, np.zeros(dose_gy.size)


def _omega_plus_floor_gy(threshold_gy: float, volume_fraction: float) -> float:
    """The dose at or below which a voxel is outside Ω⁺ whatever the others get: the threshold (Ω⁺
    holds only voxels above it, and which of those are hottest is decided among them alone), or +∞
    when V = 0 leaves Ω⁺ empty."""
    return threshold_gy if volume_fraction > 0 else np.inf


@dataclass(frozen=True)
class HottestOverdose(Objective):
    """scale · Σ over Ω⁺ of (dᵢ − threshold)², Ω⁺ re-chosen at every evaluation (see TppDoseVolume).

    The sum of the largest squared overdoses is convex in the beamlet weights, so with ``scale`` fixed
    this is the convex inner problem of one outer iteration.
    """

    structure: str
    threshold_gy: float
    volume_fraction: float
    scale: float

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient, _ = _hottest_overdose(
            dose_gy, self.threshold_gy, self.volume_fraction, self.scale, False
        )
        return value, gradient

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        return np.full(dose_gy.size, 2.0 * self.scale)

    @property
    def inert_below_gy(self) -> float:
        return _omega_plus_floor_gy(self.threshold_gy, self.volume_fraction)

    def compiled_term(self, voxel_count: int) -> CompiledTerm:
        return _hottest_overdose_term(self.threshold_gy, self.volume_fraction, self.scale, False, voxel_count)


@dataclass(frozen=True)
class TppDoseVolume(Objective):
    """The TPP dose–volume term of METHOD §3: weight · (1/|Ω⁺|) · Σ_{Ω⁺} (dᵢ − threshold)².

    Ω⁺ = {i : dᵢ ≥ D(V) and dᵢ > threshold}, D(V) the minimum dose of the hottest V = ``volume_fraction``;
    ``weight`` is λₛ/λ_PTV. An empty Ω⁺ (or V = 0) contributes 0. Frozen, the normalization 1/|Ω⁺| is
    held at the outer iterate's value while Ω⁺ itself follows the dose (our choice, see the module notes).
    """

    structure: str
    threshold_gy: float
    volume_fraction: float
    weight: float = 1.0
    needs_outer_iterations: ClassVar[bool] = True

    def frozen(self, dose_gy: np.ndarray) -> HottestOverdose:
        if self.volume_fraction <= 0:  # Ω⁺ is always empty
            # weight/1: the normalization of an empty Ω⁺ (the term then adds nothing anyway)
            return HottestOverdose(self.structure, self.threshold_gy, self.volume_fraction, self.weight / 1)
        count = hottest_voxel_count(self.volume_fraction, dose_gy.size)
        dose = np.ascontiguousarray(dose_gy, dtype=np.float64)
        scale = frozen_scale(dose, float(self.threshold_gy), count, float(self.weight))
        return HottestOverdose(self.structure, self.threshold_gy, self.volume_fraction, scale)

    def value_and_gradient(self, dose_gy: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient, _ = _hottest_overdose(
            dose_gy, self.threshold_gy, self.volume_fraction, self.weight, True
        )
        return value, gradient

    def curvature(self, dose_gy: np.ndarray) -> np.ndarray:
        if self.volume_fraction <= 0:
            return np.zeros(dose_gy.size)
        count = hottest_voxel_count(self.volume_fraction, dose_gy.size)
        return np.full(dose_gy.size, 2.0 * self.weight / count)

    @property
    def inert_below_gy(self) -> float:
        return _omega_plus_floor_gy(self.threshold_gy, self.volume_fraction)

    def compiled_term(self, voxel_count: int) -> CompiledTerm:
        return _hottest_overdose_term(self.threshold_gy, self.volume_fraction, self.weight, True, voxel_count)
