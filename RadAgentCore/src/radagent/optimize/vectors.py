"""Vector reductions for the optimizer's hot loops, summed in one fixed order on the calling thread.

numpy's 1-D ``a @ b`` and ``np.linalg.norm`` call OpenBLAS, which wakes its worker threads above about
10 000 entries; on shared cores one such dot product of 12 000 voxel doses measured 2 ms instead of
30 µs. Until now the optimizer summed with ``np.einsum("i,i->")``. For contiguous float64 arrays (all
the optimizer passes) its loop on x86-64 (numpy's SSE baseline: two lanes, no fused multiply-add,
behind a buffered iterator) gives the order :func:`dot` keeps, entry for entry:

- chunks of 8192 entries (the iterator's buffer), each summed afresh and added to the total in turn;
- within a chunk, two running sums, lane 0 over the even and lane 1 over the odd entries, in blocks of
  eight entries, each lane adding its products of a block from the last to the first;
- the chunk's rest added pairwise (a last single entry to lane 0), then lane 0 + lane 1.

So plans are bit for bit what they were (the optimizer's cold start stops far from convergence, where
rounding can move a random-TPP plan by percent), now on every platform and numpy build, and
compiled, so that the L-BFGS two-loop recursion (:func:`two_loop_kernel`) can run in one call
instead of some sixty numpy calls per iteration.

numba caches a kernel together with the compiled functions it calls from other files, and the module
constants it reads, and re-compiles it only when the kernel's own file changes. After editing one of
these modules (a kernel or a constant), delete the ``__pycache__`` of the modules that call into it:
this module is called from ``optimize/objectives.py`` and ``optimize/quasi_newton.py``, and those two
and ``dose/influence.py`` from ``optimize/solver.py`` (which so reaches this one too). Tests compare
each compiled caller with the Python form of what it calls (:func:`dot`, the objectives, the
iteration driven from Python) and fail on a stale cache whose code computes differently.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["compiled_dot", "dot", "maximum_zero", "norm", "two_loop_kernel"]

_LANES = 2
_BLOCK = 4 * _LANES
_CHUNK = 8192  # numpy's iterator buffer: einsum sums each such chunk afresh


@njit(cache=True)
def compiled_dot(a, b):  # pragma: no cover - compiled
    """Σ aᵢ·bᵢ of contiguous float64 arrays in the order of the module notes (for other numba kernels;
    Python calls :func:`dot`)."""
    total = 0.0
    for start in range(0, a.size, _CHUNK):
        stop = min(start + _CHUNK, a.size)
        lane0 = 0.0
        lane1 = 0.0
        i = start
        while stop - i >= _BLOCK:
            for k in range(3, -1, -1):
                lane0 = lane0 + a[i + 2 * k] * b[i + 2 * k]
                lane1 = lane1 + a[i + 2 * k + 1] * b[i + 2 * k + 1]
            i += _BLOCK
        while stop - i >= _LANES:
            lane0 = lane0 + a[i] * b[i]
            lane1 = lane1 + a[i + 1] * b[i + 1]
            i += _LANES
        if i < stop:  # numpy pads the last pair with a zero
            lane0 = lane0 + a[i] * b[i]
            lane1 = lane1 + 0.0
        total = total + (lane0 + lane1)
    return total


@njit(cache=True)
def maximum_zero(value):  # pragma: no cover - compiled
    """np.maximum(value, 0.0) for one float, as numpy gives it: NaN kept, −0.0 and below become +0.0."""
    return value if value > 0.0 or np.isnan(value) else 0.0


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ aᵢ·bᵢ of two 1-D arrays of one length, in float64 (other input is made contiguous float64)."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"dot needs two 1-D arrays of one length, got shapes {a.shape} and {b.shape}")
    if a.dtype != np.float64 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, np.float64)
    if b.dtype != np.float64 or not b.flags.c_contiguous:
        b = np.ascontiguousarray(b, np.float64)
    return float(compiled_dot(a, b))


def norm(a: np.ndarray) -> float:
    """Euclidean norm of a 1-D float array."""
    return math.sqrt(dot(a, a))


@njit(cache=True)
def two_loop_kernel(gradient, s_rows, y_rows, rho, order, scale):  # pragma: no cover - compiled
    """−H·gradient by the L-BFGS two-loop recursion over the pairs ``s_rows[order]``, ``y_rows[order]``
    (oldest first), H₀ = ``scale``·I; each operation rounded as its numpy form would be."""
    q = gradient.copy()
    alphas = np.empty(order.size)
    for m in range(order.size - 1, -1, -1):
        k = order[m]
        alpha = rho[k] * compiled_dot(s_rows[k], q)
        for i in range(q.size):
            q[i] = q[i] - alpha * y_rows[k, i]
        alphas[m] = alpha
    for i in range(q.size):
        q[i] = q[i] * scale
    for m in range(order.size):
        k = order[m]
        coefficient = alphas[m] - rho[k] * compiled_dot(y_rows[k], q)
        for i in range(q.size):
            q[i] = q[i] + coefficient * s_rows[k, i]
    for i in range(q.size):
        q[i] = -q[i]
    return q
