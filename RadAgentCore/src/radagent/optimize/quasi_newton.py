"""A projected L-BFGS method for min f(x) subject to x ≥ 0, the optimizer's quasi-Newton iterations.

Why not scipy's L-BFGS-B: its per-call set-up and its BLAS calls cost milliseconds per iteration on a
busy machine, more than the matrix products themselves at agent resolution; this method uses a few
vector operations per iteration (the two-loop recursion one compiled call, :mod:`vectors`) and keeps
its curvature memory across the outer iterations, whose surrogate objectives differ only in their
frozen voxel sets.

Each iteration: variables at the bound whose gradient points outward are held (the active set); the
L-BFGS two-loop recursion turns the projected gradient into a direction on the others; the step is
projected onto x ≥ 0 and backtracked until the Armijo condition on the projected step holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from radagent.optimize.vectors import dot, norm, two_loop_direction

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
    """Projected L-BFGS for x ≥ 0 with a curvature memory of ``memory`` pairs, kept between calls.

    The pairs live in the rows of two arrays; ``_order`` lists the rows in use, oldest first, so that
    the two-loop recursion runs as one compiled call.
    """

    memory: int = 10
    _s_rows: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)
    _y_rows: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)
    _rho: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)  # 1/sᵀy
    _sy_yy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)  # sᵀy, yᵀy
    _order: deque[int] = field(default_factory=deque, repr=False)

    def _direction(self, gradient: np.ndarray) -> np.ndarray:
        """−H·gradient by the two-loop recursion over the stored pairs, H₀ = (sᵀy / yᵀy)·I of the newest."""
        sy, yy = self._sy_yy[self._order[-1]]
        order = np.fromiter(self._order, dtype=np.int64, count=len(self._order))
        return two_loop_direction(gradient, self._s_rows, self._y_rows, self._rho, order, sy / yy)

    def _remember(self, s: np.ndarray, y: np.ndarray) -> None:
        """Store a curvature pair when it is positive (the objective is convex along s)."""
        sy = dot(s, y)
        yy = dot(y, y)
        if not (sy > 1e-12 * yy and sy > 0) or self.memory < 1:
            return
        if self._s_rows.shape != (self.memory, s.size):
            self._s_rows, self._y_rows = np.empty((self.memory, s.size)), np.empty((self.memory, s.size))
            self._rho, self._sy_yy = np.empty(self.memory), np.empty((self.memory, 2))
            self._order.clear()
        if len(self._order) == self.memory:
            row = self._order.popleft()
        else:
            row = min(set(range(self.memory)) - set(self._order))
        self._s_rows[row], self._y_rows[row] = s, y
        self._rho[row], self._sy_yy[row] = 1.0 / sy, (sy, yy)
        self._order.append(row)

    def _step(self, x: np.ndarray, projected: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, float]:
        """Search direction on the free variables and the first trial step length."""
        if self._order and self._s_rows.shape[1] != projected.size:
            self._order.clear()  # pairs of a problem of another size say nothing about this one
        if self._order:
            direction = self._direction(projected)
            direction[~free] = 0.0
            if dot(direction, projected) < 0:
                return direction, 1.0
            self._order.clear()  # the memory no longer gives a descent direction: start afresh
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
