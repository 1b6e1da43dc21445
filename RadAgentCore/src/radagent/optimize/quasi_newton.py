"""A projected L-BFGS method for min f(x) subject to x ≥ 0, the optimizer's quasi-Newton iterations.

Why not scipy's L-BFGS-B: its per-call set-up and its BLAS calls cost milliseconds per iteration on a
busy machine, more than the matrix products themselves at agent resolution; this method keeps its
curvature memory across the outer iterations, whose surrogate objectives differ only in their frozen
voxel sets.

Each iteration: variables at the bound whose gradient points outward are held (the active set); the
L-BFGS two-loop recursion turns the projected gradient into a direction on the others; the step is
projected onto x ≥ 0 and backtracked until the Armijo condition on the projected step holds.

The method is written once, as a compiled state machine: :func:`advance` is told f and ∇f at the point
it asked for and says whether that point is the next iterate; :func:`search` picks the next direction
and trial point. :meth:`ProjectedLbfgs.iterate` drives it with any Python objective; a compiled
objective drives it without leaving compiled code (the solver's TPP outer iterations, about 250
evaluations per environment step, whose Python glue had cost about as much as the matrix products). Every
operation is rounded as the numpy form it replaced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from radagent.optimize.vectors import compiled_dot, maximum_zero, two_loop_kernel

__all__ = [
    "EMITTED",
    "FINISHED",
    "InnerRun",
    "LbfgsState",
    "ProjectedLbfgs",
    "advance",
    "restart",
    "search",
    "steps_taken",
    "trial_point",
]

ValueAndGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]

_ARMIJO = 1e-4
_BACKTRACKS = 30
_FIRST_STEP_FRACTION = 0.1  # without curvature memory, the first step changes x by 10 % of its norm
_RELATIVE_DECREASE_TOLERANCE = 1e-10

# Rows of LbfgsState.vectors: the iterate, its gradient, the projected gradient, the direction, the
# trial point (the point the machine asks for), and the free-variable mask (1.0 free, 0.0 held).
_X, _GRADIENT, _PROJECTED, _DIRECTION, _TRIAL, _FREE = range(6)
# LbfgsState.scalars: f at the iterate, the trial step length.
_VALUE, _STEP = range(2)
# LbfgsState.counters: the phase, steps taken, evaluations, failed trials of this step, searches made,
# and the evaluations when the iterate was reached (what a run reports).
_PHASE, _STEPS, _EVALUATIONS, _BACKTRACKED, _SEARCHES, _REACHED_AFTER = range(6)
_AT_START, _AT_TRIAL = 0, 1  # phases: the trial point is the start, or a step's trial
EMITTED = 1  # advance's result bits: a new iterate (the start or a step) to report
FINISHED = 2  # … and nothing more to do (a stationary point to rounding)


@dataclass(frozen=True)
class InnerRun:
    """A point reached, its objective value and projected-gradient norm, and what it cost to get there."""

    x: np.ndarray
    value: float
    projected_gradient_norm: float  # ‖∇f‖ over the variables not held at the bound x = 0
    iterations: int
    evaluations: int


@dataclass
class LbfgsState:
    """Everything :func:`advance` reads and writes, as arrays: one run's vectors and counters, and the
    curvature pairs (sₖ, yₖ; ρₖ, sₖᵀyₖ, yₖᵀyₖ) in rows listed oldest first by ``order[:held[0]]``, shared
    by the runs of one :class:`ProjectedLbfgs`."""

    vectors: np.ndarray  # (6, n), rows _X … _FREE
    scalars: np.ndarray  # (2,)
    counters: np.ndarray  # (6,) int64
    s_rows: np.ndarray  # (memory, n)
    y_rows: np.ndarray
    pair_scalars: np.ndarray  # (memory, 3): ρ = 1/sᵀy, sᵀy, yᵀy
    order: np.ndarray  # (memory,) int64
    held: np.ndarray  # (1,) int64: pairs in use

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays in the argument order of :func:`advance` and :func:`search`."""
        return (
            self.vectors,
            self.scalars,
            self.counters,
            self.s_rows,
            self.y_rows,
            self.pair_scalars,
            self.order,
            self.held,
        )

    @property
    def trial(self) -> np.ndarray:
        """The point whose f and ∇f the machine needs next."""
        return self.vectors[_TRIAL]

    def run(self) -> InnerRun:
        """The current iterate as an :class:`InnerRun` (its own copy of x)."""
        vectors, counters = self.vectors, self.counters
        return InnerRun(
            vectors[_X].copy(),
            float(self.scalars[_VALUE]),
            math.sqrt(compiled_dot(vectors[_PROJECTED], vectors[_PROJECTED])),
            int(counters[_STEPS]),
            int(counters[_REACHED_AFTER]),
        )


@njit(cache=True)
def _project(vectors):  # pragma: no cover - compiled
    """The free variables (off the bound, or pushed off it by the gradient) and the gradient on them;
    whether any is non-zero."""
    x, gradient, projected, free = vectors[_X], vectors[_GRADIENT], vectors[_PROJECTED], vectors[_FREE]
    moving = False
    for i in range(x.size):
        is_free = x[i] > 0 or gradient[i] < 0
        free[i] = 1.0 if is_free else 0.0
        projected[i] = gradient[i] if is_free else 0.0
        moving = moving or projected[i] != 0
    return moving


@njit(cache=True)
def _set_trial(vectors, step):  # pragma: no cover - compiled
    """trial = max(x + step·direction, 0)."""
    x, direction, trial = vectors[_X], vectors[_DIRECTION], vectors[_TRIAL]
    for i in range(x.size):
        trial[i] = maximum_zero(x[i] + step * direction[i])


@njit(cache=True)
def search(vectors, scalars, counters, s_rows, y_rows, pair_scalars, order, held):  # pragma: no cover
    """After an emitted iterate, a new search: the L-BFGS direction on the free variables (steepest
    descent with a first step of 10 % of ‖x‖ when the memory is empty or gives no descent), and its
    first trial point. Called only when another step is wanted, since it may drop the memory."""
    projected, free, direction = vectors[_PROJECTED], vectors[_FREE], vectors[_DIRECTION]
    counters[_BACKTRACKED] = 0
    counters[_SEARCHES] += 1
    pairs = held[0]
    if pairs > 0:
        newest = order[pairs - 1]
        scale = pair_scalars[newest, 1] / pair_scalars[newest, 2]
        found = two_loop_kernel(projected, s_rows, y_rows, pair_scalars[:, 0], order[:pairs], scale)
        for i in range(found.size):
            direction[i] = found[i] if free[i] != 0.0 else 0.0
        if compiled_dot(direction, projected) < 0:
            scalars[_STEP] = 1.0
            _set_trial(vectors, 1.0)
            return
        held[0] = 0  # the memory no longer gives a descent direction: start afresh
    for i in range(projected.size):
        direction[i] = -projected[i]
    x_norm = math.sqrt(compiled_dot(vectors[_X], vectors[_X]))
    step = _FIRST_STEP_FRACTION * max(x_norm, 1e-12) / math.sqrt(compiled_dot(projected, projected))
    scalars[_STEP] = step
    _set_trial(vectors, step)


@njit(cache=True)
def _remember(s, y, s_rows, y_rows, pair_scalars, order, held):  # pragma: no cover - compiled
    """Store a curvature pair when it is positive (the objective is convex along s), recycling the
    oldest row when the memory is full."""
    sy = compiled_dot(s, y)
    yy = compiled_dot(y, y)
    memory = order.size
    if not (sy > 1e-12 * yy and sy > 0) or memory < 1:
        return
    pairs = held[0]
    if pairs == memory:
        row = order[0]
        for k in range(memory - 1):
            order[k] = order[k + 1]
        pairs -= 1
    else:
        row = pairs  # rows are freed only all at once, so 0 … pairs − 1 are the ones in use
    s_rows[row] = s
    y_rows[row] = y
    pair_scalars[row, 0], pair_scalars[row, 1], pair_scalars[row, 2] = 1.0 / sy, sy, yy
    order[pairs] = row
    held[0] = pairs + 1


@njit(cache=True)
def advance(  # pragma: no cover - compiled
    vectors, scalars, counters, s_rows, y_rows, pair_scalars, order, held, value, gradient
):
    """Take f and ∇f at the trial point: returns EMITTED when that point is the new iterate (the start,
    or a step that met the Armijo condition; call :func:`search` for the next trial if more steps are
    wanted), with FINISHED when the method has stopped; otherwise (0) the trial point has been
    replaced by the next one along the same direction."""
    x, current = vectors[_X], vectors[_GRADIENT]
    counters[_EVALUATIONS] += 1
    if counters[_PHASE] == _AT_START:
        scalars[_VALUE] = value
        current[:] = gradient
        counters[_PHASE] = _AT_TRIAL
        counters[_REACHED_AFTER] = counters[_EVALUATIONS]
        return EMITTED if _project(vectors) else EMITTED | FINISHED
    trial = vectors[_TRIAL]
    s = np.empty(x.size)
    for i in range(x.size):
        s[i] = trial[i] - x[i]
    if value <= scalars[_VALUE] + _ARMIJO * compiled_dot(current, s):
        counters[_STEPS] += 1
        y = np.empty(x.size)
        for i in range(x.size):
            y[i] = gradient[i] - current[i]
        _remember(s, y, s_rows, y_rows, pair_scalars, order, held)
        decrease = scalars[_VALUE] - value
        x[:] = trial
        scalars[_VALUE] = value
        current[:] = gradient
        counters[_REACHED_AFTER] = counters[_EVALUATIONS]
        moving = _project(vectors)
        if not moving or decrease <= _RELATIVE_DECREASE_TOLERANCE * max(abs(value), 1.0):
            return EMITTED | FINISHED
        return EMITTED
    counters[_BACKTRACKED] += 1
    if counters[_BACKTRACKED] == _BACKTRACKS:
        return FINISHED  # no decrease along a descent direction: x is optimal to rounding
    scalars[_STEP] *= 0.5
    _set_trial(vectors, scalars[_STEP])
    return 0


@njit(cache=True)
def restart(vectors, scalars, counters, x):  # pragma: no cover - compiled
    """Begin a run from ``x`` (clipped to x ≥ 0) in the same state arrays (the curvature pairs are not
    touched); its first trial point is x."""
    for i in range(x.size):
        vectors[_X, i] = maximum_zero(x[i])
    vectors[_TRIAL] = vectors[_X]
    scalars[:] = 0.0
    counters[:] = 0


@njit(cache=True)
def trial_point(vectors):  # pragma: no cover - compiled
    """The point whose f and ∇f the machine needs next (a view: copy it before changing the state)."""
    return vectors[_TRIAL]


@njit(cache=True)
def steps_taken(counters):  # pragma: no cover - compiled
    """Steps taken in this run."""
    return counters[_STEPS]


@dataclass
class ProjectedLbfgs:
    """Projected L-BFGS for x ≥ 0 with a curvature memory of ``memory`` pairs, kept between calls (and
    dropped when a problem of another size comes)."""

    memory: int = 10
    _pairs: tuple[np.ndarray, ...] | None = field(default=None, repr=False)  # s, y, scalars, order, held

    def start(self, x: np.ndarray) -> LbfgsState:
        """A run from ``x`` (clipped to x ≥ 0) with this method's curvature memory; its first trial is x.

        For a problem of another size the run gets an empty memory of its size, which replaces the
        kept one only once the run searches (:meth:`keep`): a run that stops before that leaves it.
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        pairs = self._pairs
        if pairs is None or pairs[0].shape != (self.memory, x.size):
            memory = max(self.memory, 0)
            pairs = (
                np.empty((memory, x.size)),
                np.empty((memory, x.size)),
                np.empty((memory, 3)),
                np.zeros(memory, dtype=np.int64),
                np.zeros(1, dtype=np.int64),
            )
        state = LbfgsState(np.zeros((6, x.size)), np.zeros(2), np.zeros(6, dtype=np.int64), *pairs)
        restart(state.vectors, state.scalars, state.counters, x)
        return state

    def keep(self, state: LbfgsState) -> None:
        """After a run's step: its memory becomes this method's once it has searched (the old memory
        stayed untouched until then, as when the pairs were dropped at the first search)."""
        if state.counters[_SEARCHES] > 0:  # (a run sharing the kept memory re-keeps the same arrays)
            self._pairs = (state.s_rows, state.y_rows, state.pair_scalars, state.order, state.held)

    def iterate(self, fun: ValueAndGradient, x: np.ndarray) -> Iterator[InnerRun]:
        """Projected quasi-Newton steps on ``fun`` from ``x`` (x ≥ 0): the start, then each step's result.

        The sequence ends by itself only where no step can lower f — a stationary point to rounding.
        """
        state = self.start(x)
        arrays = state.arrays
        while True:
            value, gradient = fun(state.trial.copy())
            gradient = np.ascontiguousarray(gradient, dtype=np.float64)
            result = advance(*arrays, float(value), gradient)
            self.keep(state)
            if result & EMITTED:
                yield state.run()
            if result & FINISHED:
                return
            if result & EMITTED:  # the caller wants another step (searching may drop the memory)
                search(*arrays)
                self.keep(state)

    def minimize(self, fun: ValueAndGradient, x: np.ndarray, iterations: int) -> InnerRun:
        """At most ``iterations`` projected quasi-Newton steps on ``fun`` from ``x`` (x ≥ 0)."""
        for run in self.iterate(fun, x):
            if run.iterations >= iterations:
                break
        return run
