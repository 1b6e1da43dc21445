"""The optimizer's compiled vector reductions sum in the order numpy's einsum did (optimize/vectors.py):
plans must not move by a bit, since the cold-start optimization amplifies rounding."""

import platform
from collections import deque

import numpy as np
import pytest

from radagent.optimize.quasi_newton import InnerRun, ProjectedLbfgs
from radagent.optimize.vectors import dot, norm, two_loop_kernel

try:
    from numpy._core.multiarray import c_einsum
except ImportError:  # numpy < 2
    from numpy.core.multiarray import c_einsum

SIZES = [*range(0, 40), 996, 1001, 4097, 8191, 8192, 8193, 16383, 16384, 16385, 20001]


def lane_order_dot(a: np.ndarray, b: np.ndarray) -> float:
    """The documented order, one Python float operation at a time."""
    total = 0.0
    for start in range(0, a.size, 8192):
        lanes = [0.0, 0.0]
        i, n = start, min(start + 8192, a.size)
        while n - i >= 8:
            for k in (3, 2, 1, 0):
                for lane in (0, 1):
                    lanes[lane] = lanes[lane] + float(a[i + 2 * k + lane]) * float(b[i + 2 * k + lane])
            i += 8
        while i < n:
            lanes[0] = lanes[0] + float(a[i]) * float(b[i])
            lanes[1] = lanes[1] + (float(a[i + 1]) * float(b[i + 1]) if i + 1 < n else 0.0)
            i += 2
        total = total + (lanes[0] + lanes[1])
    return total


def random_pair(rng, size):
    return rng.normal(size=size) * rng.uniform(0.01, 1e3), rng.normal(size=size)


@pytest.mark.parametrize("size", SIZES)
def test_dot_sums_in_the_documented_order(size):
    rng = np.random.default_rng(size)
    for _ in range(5):
        a, b = random_pair(rng, size)
        assert dot(a, b) == lane_order_dot(a, b)
    assert norm(a) == np.sqrt(lane_order_dot(a, a))


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="numpy's einsum keeps this order on x86-64"
)
def test_dot_equals_numpys_einsum_bit_for_bit():
    """What the plans recorded before the compiled optimizer loops were computed with."""
    rng = np.random.default_rng(0)
    for size in [*SIZES, *rng.integers(40, 5000, 60), *rng.integers(5000, 300_000, 40)]:
        a, b = random_pair(rng, int(size))
        assert dot(a, b) == float(c_einsum("i,i->", a, b)), size


def test_dot_refuses_mismatched_lengths_and_makes_other_input_contiguous_float64():
    with pytest.raises(ValueError, match="one length"):
        dot(np.ones(10), np.ones(3))
    a = np.arange(40.0)
    assert dot(a[::2], a[::2]) == dot(np.ascontiguousarray(a[::2]), np.ascontiguousarray(a[::2]))
    assert dot(a.astype(np.float32), a) == dot(a, a)


def test_compiled_callers_agree_with_dot():
    """Kernels in other files inline the compiled dot into their numba cache; a stale cache (after an
    edit of the dot alone) would show here as a different value."""
    from radagent.optimize.objectives import HottestOverdose, TppDoseVolume

    rng = np.random.default_rng(9)
    for size in (300, 8192 + 77):
        dose = rng.uniform(0.0, 2.0, size)
        excess = np.where(dose > 0.5, dose - 0.5, 0.0)
        value, _ = HottestOverdose("S", 0.5, 1.0, 0.25).value_and_gradient(dose)
        assert value == 0.25 * dot(excess, excess)
        value, _ = TppDoseVolume("S", 0.5, 1.0, 3.0).value_and_gradient(dose)
        assert value == 3.0 / np.count_nonzero(excess) * dot(excess, excess)


def numpy_two_loop(gradient, pairs, scale):
    """The recursion as numpy operations (the optimizer's form before it was compiled)."""
    q = gradient.copy()
    alphas = []
    for s, y in reversed(pairs):
        alpha = (1.0 / lane_order_dot(s, y)) * lane_order_dot(s, q)
        q -= alpha * y
        alphas.append(alpha)
    q *= scale
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        q += (alpha - (1.0 / lane_order_dot(s, y)) * lane_order_dot(y, q)) * s
    return -q


def test_two_loop_direction_is_the_numpy_recursion_bit_for_bit():
    rng = np.random.default_rng(4)
    size, memory = 333, 6
    pairs = [random_pair(rng, size) for _ in range(memory)]
    s_rows, y_rows = np.empty((memory, size)), np.empty((memory, size))
    order = rng.permutation(memory)  # rows in any slots; ``order`` says which is oldest
    for (s, y), row in zip(pairs, order, strict=True):
        s_rows[row], y_rows[row] = s, y
    rho = np.array([1.0 / lane_order_dot(s_rows[k], y_rows[k]) for k in range(memory)])
    gradient = rng.normal(size=size)
    for used in (1, 3, memory):
        expected = numpy_two_loop(gradient, pairs[-used:], 0.7)
        found = two_loop_kernel(gradient, s_rows, y_rows, rho, order[-used:], 0.7)
        np.testing.assert_array_equal(found, expected)


class DequeLbfgs:
    """The iteration before it was compiled, as it stood: a deque of (s, y, ρ) and numpy operations."""

    def __init__(self, memory):
        self.memory = memory
        self.pairs = deque()

    def _direction(self, gradient):
        q = gradient.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * dot(s, q)
            q -= alpha * y
            alphas.append(alpha)
        s, y, _ = self.pairs[-1]
        q *= dot(s, y) / dot(y, y)
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            q += (alpha - rho * dot(y, q)) * s
        return -q

    def _remember(self, s, y):
        sy = dot(s, y)
        if sy > 1e-12 * dot(y, y) and sy > 0 and self.memory >= 1:
            self.pairs.append((s, y, 1.0 / sy))
            while len(self.pairs) > self.memory:
                self.pairs.popleft()

    def _step(self, x, projected, free):
        if self.pairs and self.pairs[0][0].size != projected.size:
            self.pairs.clear()
        if self.pairs:
            direction = self._direction(projected)
            direction[~free] = 0.0
            if dot(direction, projected) < 0:
                return direction, 1.0
            self.pairs.clear()
        return -projected, 0.1 * max(norm(x), 1e-12) / norm(projected)

    def iterate(self, fun, x):
        x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
        value, gradient = fun(x)
        evaluations, steps = 1, 0
        free = (x > 0) | (gradient < 0)
        projected = np.where(free, gradient, 0.0)
        yield InnerRun(x, value, norm(projected), steps, evaluations)
        while np.any(projected):
            direction, step = self._step(x, projected, free)
            for _ in range(30):
                trial = np.maximum(x + step * direction, 0.0)
                trial_value, trial_gradient = fun(trial)
                evaluations += 1
                if trial_value <= value + 1e-4 * dot(gradient, trial - x):
                    break
                step *= 0.5
            else:
                return
            steps += 1
            self._remember(trial - x, trial_gradient - gradient)
            decrease = value - trial_value
            x, value, gradient = trial, trial_value, trial_gradient
            free = (x > 0) | (gradient < 0)
            projected = np.where(free, gradient, 0.0)
            yield InnerRun(x, value, norm(projected), steps, evaluations)
            if decrease <= 1e-10 * max(abs(value), 1.0):
                return

    def minimize(self, fun, x, iterations):
        for run in self.iterate(fun, x):
            if run.iterations >= iterations:
                break
        return run


def wavy_problem(seed, size=25):
    """A non-convex bound-constrained problem on which the memory is recycled and dropped."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(40, size))
    centre = rng.normal(size=size)

    def fun(x):
        gap = x - centre
        curved = basis.T @ (basis @ gap)
        return float(0.5 * gap @ curved + 4.0 * np.sin(3.0 * x).sum()), curved + 12.0 * np.cos(3.0 * x)

    return fun


def assert_same_runs(found, expected):
    assert len(found) == len(expected)
    for mine, theirs in zip(found, expected, strict=True):
        np.testing.assert_array_equal(mine.x, theirs.x)
        assert mine.value == theirs.value and mine.evaluations == theirs.evaluations
        assert mine.iterations == theirs.iterations
        assert mine.projected_gradient_norm == theirs.projected_gradient_norm


@pytest.mark.parametrize("memory", [0, 1, 2, 5, 10])
def test_compiled_iteration_is_the_numpy_iteration_bit_for_bit(memory):
    """The compiled state machine (pair rows, lazy searches) gives the very iterates of the numpy and
    deque iteration it replaced, on a non-convex bound-constrained problem."""
    fun = wavy_problem(memory)
    expected = list(DequeLbfgs(memory).iterate(fun, np.full(25, 2.0)))[:200]
    found = list(ProjectedLbfgs(memory).iterate(fun, np.full(25, 2.0)))[:200]
    assert len(found) > 20
    assert_same_runs(found, expected)


@pytest.mark.parametrize("memory", [1, 3, 10])
def test_memory_carried_across_short_runs_as_before(memory):
    """Runs of a few steps, each from where the last stopped, with the objective changing between them
    and one of another size in between (as the outer TPP iterations use it): the same iterates, so
    the memory is kept, recycled and dropped as before, and a stopped run searches no further."""
    funs = [wavy_problem(seed) for seed in range(6)]
    odd = wavy_problem(9, size=7)
    mine, theirs = ProjectedLbfgs(memory), DequeLbfgs(memory)
    x_mine = x_theirs = np.full(25, 2.0)
    for k, fun in enumerate(funs * 3):
        if k == 7:
            assert_same_runs([mine.minimize(odd, np.ones(7), 3)], [theirs.minimize(odd, np.ones(7), 3)])
        found, expected = mine.minimize(fun, x_mine, 3), theirs.minimize(fun, x_theirs, 3)
        assert_same_runs([found], [expected])
        x_mine, x_theirs = found.x, expected.x


def test_a_run_of_another_size_drops_the_memory_only_once_it_searches():
    """As before: a run on a problem of another size that stops before its first search (a stationary
    start, or no steps asked for) leaves the memory to the next run of the first size."""
    fun, odd = wavy_problem(3), wavy_problem(9, size=7)
    flat = lambda x: (0.0, np.zeros(x.size))  # noqa: E731 - stationary everywhere
    for interlude in ((odd, 0), (flat, 5), (odd, 2)):
        mine, theirs = ProjectedLbfgs(5), DequeLbfgs(5)
        x_mine = x_theirs = np.full(25, 2.0)
        for k in range(4):
            found, expected = mine.minimize(fun, x_mine, 3), theirs.minimize(fun, x_theirs, 3)
            assert_same_runs([found], [expected])
            x_mine, x_theirs = found.x, expected.x
            if k == 1:
                other, steps = interlude
                assert_same_runs(
                    [mine.minimize(other, np.ones(7), steps)], [theirs.minimize(other, np.ones(7), steps)]
                )
