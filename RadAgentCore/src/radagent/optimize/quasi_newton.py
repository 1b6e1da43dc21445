"""A projected L-BFGS method for min f(x) subject to x ≥ 0, the optimizer's quasi-Newton iterations.

Why not scipy's L-BFGS-B: its per-call set-up and its BLAS calls cost milliseconds per iteration on a
busy machine, more than the matrix products themselves at agent resolution; this method uses only a
few numpy vector operations per iteration and keeps its curvature memory across the outer iterations,
whose surrogate objectives differ only in their frozen voxel sets.

Each iteration: variables at the bound whose gradient points outward are held (the active set); the
L-BFGS two-loop recursion turns the projected gradient into a direction on the others; the step is
projected onto x ≥ 0 and backtracked until the Armijo condition on the projected step holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from radagent.optimize.vectors import dot, norm

__all__ = ["InnerRun", "ProjectedLbfgs"]

ValueAndGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]

_ARMIJO = 1e-4
_BACKTRACKS = 30
_FIRST_STEP_FRACTION = 0.1  # without curvature memory, the first step changes x by 10 % of its norm
_RELATIVE_DECREASE_TOLERANCE = 1e-10


@dataclass(frozen=True)
class InnerRun:
    """A point reached, its objective value and projected-gradient norm, and what it cost to get there."""

    x: np.ndarray
    value: float
    projected_gradient_norm: float  # ‖∇f‖ over the variables not held at the bound x = 0
    iterations: int
    evaluations: int


def _projected(x: np.ndarray, gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The free variables (off the bound, or pushed off it by the gradient) and the gradient on them."""
    free = (x > 0) | (gradient < 0)
    return free, np.where(free, gradient, 0.0)


@dataclass
class ProjectedLbfgs:
    """Projected L-BFGS for x ≥ 0 with a curvature memory of ``memory`` pairs, kept between calls."""

    memory: int = 10
    _pairs: deque[tuple[np.ndarray, np.ndarray, float, float, float]] = field(
        default_factory=deque, repr=False
    )

    def _direction(self, gradient: np.ndarray) -> np.ndarray:
        """−H·gradient by the two-loop recursion over the stored (s, y, 1/sᵀy, sᵀy, yᵀy) pairs."""
        q = gradient.copy()
        scaled = np.empty_like(q)  # α·y and the like, written in place rather than allocated per pair
        alphas = []
        for s, y, rho, _, _ in reversed(self._pairs):
            alpha = rho * dot(s, q)
            q -= np.multiply(alpha, y, out=scaled)
            alphas.append(alpha)
        _, _, _, sy, yy = self._pairs[-1]
        q *= sy / yy
        for (s, y, rho, _, _), alpha in zip(self._pairs, reversed(alphas), strict=True):
            q += np.multiply(alpha - rho * dot(y, q), s, out=scaled)
        return -q

    def _remember(self, s: np.ndarray, y: np.ndarray) -> None:
        """Store a curvature pair when it is positive (the objective is convex along s)."""
        sy = dot(s, y)
        yy = dot(y, y)
        if sy > 1e-12 * yy and sy > 0:
            self._pairs.append((s, y, 1.0 / sy, sy, yy))
            while len(self._pairs) > self.memory:
                self._pairs.popleft()

    def _step(self, x: np.ndarray, projected: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, float]:
        """Search direction on the free variables and the first trial step length."""
        if self._pairs:
            direction = self._direction(projected)
            direction[~free] = 0.0
            if dot(direction, projected) < 0:
                return direction, 1.0
            self._pairs.clear()  # the memory no longer gives a descent direction: start afresh
        return -projected, _FIRST_STEP_FRACTION * max(norm(x), 1e-12) / norm(projected)

    def iterate(self, fun: ValueAndGradient, x: np.ndarray) -> Iterator[InnerRun]:
        """Projected quasi-Newton steps on ``fun`` from ``x`` (x ≥ 0): the start, then each step's result.

        The sequence ends by itself only where no step can lower f — a stationary point to rounding.
        """
        x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
        value, gradient = fun(x)
        evaluations, steps = 1, 0
        free, projected = _projected(x, gradient)
        yield InnerRun(x, value, norm(projected), steps, evaluations)
        while np.any(projected):
            direction, step = self._step(x, projected, free)
            for _ in range(_BACKTRACKS):
                trial = np.maximum(x + step * direction, 0.0)
                trial_value, trial_gradient = fun(trial)
                evaluations += 1
                if trial_value <= value + _ARMIJO * dot(gradient, trial - x):
                    break
                step *= 0.5
            else:
                return  # no decrease along a descent direction: x is optimal to rounding
            steps += 1
            self._remember(trial - x, trial_gradient - gradient)
            decrease = value - trial_value
            x, value, gradient = trial, trial_value, trial_gradient
            free, projected = _projected(x, gradient)
            yield InnerRun(x, value, norm(projected), steps, evaluations)
            if decrease <= _RELATIVE_DECREASE_TOLERANCE * max(abs(value), 1.0):
                return

    def minimize(self, fun: ValueAndGradient, x: np.ndarray, iterations: int) -> InnerRun:
        """At most ``iterations`` projected quasi-Newton steps on ``fun`` from ``x`` (x ≥ 0)."""
        for run in self.iterate(fun, x):
            if run.iterations >= iterations:
                break
        return run
