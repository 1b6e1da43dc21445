"""The optimizer's compiled vector reductions sum in the order numpy's einsum did (optimize/vectors.py):
plans must not move by a bit, since the cold-start optimization amplifies rounding."""

import platform

import numpy as np
import pytest

from radagent.optimize.vectors import dot, norm, two_loop_direction

try:
    from numpy._core.multiarray import c_einsum
except ImportError:  # numpy < 2
    from numpy.core.multiarray import c_einsum

SIZES = [*range(0, 40), 996, 1001, 4097]


def lane_order_dot(a: np.ndarray, b: np.ndarray) -> float:
    """The documented order, one Python float operation at a time."""
    lanes = [0.0, 0.0]
    i, n = 0, a.size
    while n - i >= 8:
        for k in (3, 2, 1, 0):
            for lane in (0, 1):
                lanes[lane] = lanes[lane] + float(a[i + 2 * k + lane]) * float(b[i + 2 * k + lane])
        i += 8
    while i < n:
        lanes[0] = lanes[0] + float(a[i]) * float(b[i])
        lanes[1] = lanes[1] + (float(a[i + 1]) * float(b[i + 1]) if i + 1 < n else 0.0)
        i += 2
    return 0.0 + (lanes[0] + lanes[1])


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
    for size in [*SIZES, *rng.integers(40, 5000, 100)]:
        a, b = random_pair(rng, int(size))
        assert dot(a, b) == float(c_einsum("i,i->", a, b)), size


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
        found = two_loop_direction(gradient, s_rows, y_rows, rho, order[-used:], 0.7)
        np.testing.assert_array_equal(found, expected)
