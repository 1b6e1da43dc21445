"""Planar contours ↔ voxel masks: the even-odd fill DICOM RTSTRUCT contours need, and its inverse.

Coordinates here are a slice's fractional pixel indices: ``x`` along i (columns), ``y`` along j (rows),
pixel (j, i) centred on (x, y) = (i, j). A pixel is inside a set of contours when a ray from its centre
crosses their edges an odd number of times (the **even-odd rule**): a hole is a second contour inside
the first, a keyhole contour is one polygon that walks in to trace its hole, and several islands are
several contours; all three come out right without knowing which contour is which.
"""

from __future__ import annotations

from collections.abc import Sequence

import contourpy
import numpy as np
from numba import njit, prange

__all__ = ["even_odd_fill", "even_odd_fill_reference", "mask_contours"]


@njit(cache=True)
def _count_crossings(points, starts, rows, counts):  # pragma: no cover - compiled
    """Per row j, how many polygon edges cross the line y = j (half-open in y, so vertices count once)."""
    for p in range(starts.shape[0] - 1):
        first, last = starts[p], starts[p + 1]
        for e in range(first, last):
            y0 = points[e, 1]
            following = e + 1 if e + 1 < last else first
            y1 = points[following, 1]
            low, high = min(y0, y1), max(y0, y1)
            j_start = max(0, int(np.ceil(low)))
            j_stop = min(rows, int(np.ceil(high)))  # rows with low <= j < high
            for j in range(j_start, j_stop):
                counts[j] += 1


@njit(cache=True)
def _fill_crossings(points, starts, rows, offsets, xs):  # pragma: no cover - compiled
    """The x of every crossing counted by :func:`_count_crossings`, grouped by row."""
    cursor = offsets[:-1].copy()
    for p in range(starts.shape[0] - 1):
        first, last = starts[p], starts[p + 1]
        for e in range(first, last):
            x0, y0 = points[e, 0], points[e, 1]
            following = e + 1 if e + 1 < last else first
            x1, y1 = points[following, 0], points[following, 1]
            low, high = min(y0, y1), max(y0, y1)
            j_start = max(0, int(np.ceil(low)))
            j_stop = min(rows, int(np.ceil(high)))
            for j in range(j_start, j_stop):
                xs[cursor[j]] = x0 + (j - y0) * (x1 - x0) / (y1 - y0)
                cursor[j] += 1


@njit(cache=True, parallel=True)
def _fill_rows(offsets, xs, columns, mask):  # pragma: no cover - compiled
    """Set the pixels between the 1st and 2nd, 3rd and 4th, … crossing of each row (x_a ≤ i < x_b)."""
    for j in prange(mask.shape[0]):
        row = np.sort(xs[offsets[j] : offsets[j + 1]])
        for a in range(0, row.shape[0] - 1, 2):
            i_start = max(0, int(np.ceil(row[a])))
            i_stop = min(columns, int(np.ceil(row[a + 1])))
            for i in range(i_start, i_stop):
                mask[j, i] = True


def _packed(polygons: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All vertices as one (N, 2) float64 array and each polygon's start offset (plus the end)."""
    polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    sizes = [len(p) for p in polygons]
    points = np.concatenate(polygons) if polygons else np.zeros((0, 2))
    return np.ascontiguousarray(points), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def even_odd_fill(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The (rows, columns) boolean mask of the pixel centres inside ``polygons`` by the even-odd rule.

    Each polygon is an (N, 2) array of (x, y) vertices, closed implicitly (last vertex back to the first).
    """
    rows, columns = (int(n) for n in shape)
    mask = np.zeros((rows, columns), dtype=bool)
    points, starts = _packed(polygons)
    if len(points) == 0:
        return mask
    counts = np.zeros(rows, dtype=np.int64)
    _count_crossings(points, starts, rows, counts)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    xs = np.empty(offsets[-1], dtype=np.float64)
    _fill_crossings(points, starts, rows, offsets, xs)
    _fill_rows(offsets, xs, columns, mask)
    return mask


def even_odd_fill_reference(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Plain numpy even-odd test of every pixel centre (the reference for :func:`even_odd_fill`)."""
    j, i = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    inside = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        following = np.roll(polygon, -1, axis=0)
        for (x0, y0), (x1, y1) in zip(polygon, following, strict=True):
            spans = (y0 <= j) != (y1 <= j)  # the edge crosses the row line, half-open as the kernel
            with np.errstate(divide="ignore", invalid="ignore"):
                x_cross = x0 + (j - y0) * (x1 - x0) / (y1 - y0)
            inside ^= spans & (x_cross > i)
    return inside


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours (each (N, 2) of (x, y), first vertex not repeated) around a 2-D mask's pixels.

    The contours run half-way between inside and outside pixel centres (marching squares at 0.5), so
    :func:`even_odd_fill` of them gives the mask back exactly; collinear vertices are dropped.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, columns = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
    if len(rows) == 0:
        return []
    corner = np.array([columns[0], rows[0]], dtype=np.float64)  # the bounding box's (x, y) origin
    box = mask[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    padded = np.pad(box.astype(np.float64), 1)
    generator = contourpy.contour_generator(
        z=padded, line_type=contourpy.LineType.Separate, corner_mask=False
    )
    contours = []
    for line in generator.lines(0.5):
        line = np.asarray(line, dtype=np.float64) - 1.0 + corner  # undo the padding and the crop
        if len(line) > 1 and np.allclose(line[0], line[-1]):
            line = line[:-1]
        line = _without_collinear(line)
        if len(line) >= 3:
            contours.append(line)
    return contours


def _without_collinear(line: np.ndarray) -> np.ndarray:
    """The closed polygon without the vertices that lie on the straight line through their neighbours."""
    before, after = np.roll(line, 1, axis=0), np.roll(line, -1, axis=0)
    cross = (line[:, 0] - before[:, 0]) * (after[:, 1] - line[:, 1]) - (line[:, 1] - before[:, 1]) * (
        after[:, 0] - line[:, 0]
    )
    return line[np.abs(cross) > 1e-9]
