"""Slices of a plan as images: CT with a window, structure contours, beam lines and the dose colour-wash.

Every view is in the radiological display convention whatever the CT's direction matrix: axial with the
patient's right on the image's left and anterior up, coronal and sagittal with superior up. The report
figure (:mod:`radagent.report`) and the LLM agents' renderings (:func:`render_views`) share it. Renderings
are deterministic: the same inputs give the same PNG bytes (no timestamps or software tags).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from radagent.beams import BeamGeometry
from radagent.geometry import Grid
from radagent.patient import Case

__all__ = ["CT_WINDOW_HU", "canonical", "display_position_mm", "render_views"]

CT_WINDOW_HU = (-160.0, 240.0)  # soft tissue: width 400, level 40
_VIEWS = ("axial", "coronal", "sagittal")


def _display_axes(grid: Grid) -> dict[str, int]:
    """For each RAS axis (x, y, z), which array axis (0 = k, 1 = j, 2 = i) runs mostly along it."""
    direction = np.abs(grid.direction)  # rows: RAS x, y, z; columns: i, j, k
    array_axis_of_column = {0: 2, 1: 1, 2: 0}
    order = np.argsort(-direction, axis=None)
    taken_rows: set[int] = set()
    taken_cols: set[int] = set()
    mapping: dict[str, int] = {}
    for flat in order:  # greedy assignment of lattice axes to RAS axes by alignment
        row, col = divmod(int(flat), 3)
        if row in taken_rows or col in taken_cols:
            continue
        taken_rows.add(row)
        taken_cols.add(col)
        mapping["xyz"[row]] = array_axis_of_column[col]
    return mapping


def _layout(grid: Grid) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], np.ndarray]:
    """The array-axis order of the display volume [S→I, A→P, R→L], which display axes are flipped, and the
    spacing (mm) along each display axis."""
    axes = _display_axes(grid)
    order = (axes["z"], axes["y"], axes["x"])
    spacing_kji = grid.spacing_mm[::-1]
    column_of_array_axis = {0: 2, 1: 1, 2: 0}
    # Superior at index 0 (z decreasing), anterior at index 0 (y decreasing), right at index 0 (x decreasing).
    flips = tuple(
        bool(grid.direction[ras_row, column_of_array_axis[array_axis]] > 0)
        for ras_row, array_axis in zip((2, 1, 0), order, strict=True)
    )
    return order, flips, np.array([spacing_kji[a] for a in order])


def canonical(volume: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """A [k, j, i] volume in display order [S→I, A→P, R→L], and the spacing (mm) along each display axis."""
    order, flips, spacing = _layout(grid)
    result = np.transpose(volume, order)
    for axis, flip in enumerate(flips):
        if flip:
            result = np.flip(result, axis=axis)
    return result, spacing


def display_position_mm(grid: Grid, points_ras: np.ndarray) -> np.ndarray:
    """RAS points (N, 3) as positions (mm) along the display axes of :func:`canonical` — the frame in which
    voxel n's centre lies at (n + 0.5)·spacing."""
    order, flips, spacing = _layout(grid)
    ijk = np.atleast_2d(points_ras) @ grid.ras_to_ijk[:3, :3].T + grid.ras_to_ijk[:3, 3]
    kji = ijk[:, ::-1]
    shape = np.array(grid.shape)[list(order)]
    index = kji[:, list(order)]
    index = np.where(np.array(flips), shape - 1 - index, index)
    return (index + 0.5) * spacing


def render_views(
    case: Case,
    dose_ct_gy: np.ndarray | None,
    angles_deg: Sequence[float],
    isocenter_ras: Sequence[float],
    labels: Mapping[str, str],
    size_px: int = 512,
) -> list[tuple[str, bytes]]:
    """Axial, coronal and sagittal planes through the isocentre as PNG images ``size_px`` square: the CT
    in a soft-tissue window, the contours of the structures in ``labels`` (name → legend text), the beams
    as lines from their sources (axial) and the dose colour-wash with its scale in % of the prescription."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    p = case.prescription_gy
    ct, spacing = canonical(case.ct_hu, case.grid)
    dose = None if dose_ct_gy is None else canonical(np.asarray(dose_ct_gy, np.float32), case.grid)[0]
    iso = display_position_mm(case.grid, np.asarray(isocenter_ras, dtype=float))[0]
    index = np.clip((iso / spacing - 0.5).round().astype(int), 0, np.array(ct.shape) - 1)
    colors = plt.get_cmap("tab10")
    shown = [s for s in case.structures if s.name in labels]
    contours = {s.name: canonical(s.mask, case.grid)[0] for s in shown}
    images = []
    for view in _VIEWS:
        take, rows_axis, cols_axis = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}[view]
        section = [slice(None)] * 3
        section[take] = index[take]
        row_mm, col_mm = spacing[rows_axis], spacing[cols_axis]
        ct_slice = ct[tuple(section)]
        extent = (0, ct_slice.shape[1] * col_mm, ct_slice.shape[0] * row_mm, 0)
        figure = plt.figure(figsize=(size_px / 100, size_px / 100), dpi=100, facecolor="black")
        axes = figure.add_axes((0.0, 0.0, 0.86, 1.0))
        axes.imshow(ct_slice, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], extent=extent)
        if dose is not None:
            wash = np.ma.masked_less(100.0 * dose[tuple(section)] / p, 10.0)
            image = axes.imshow(wash, cmap="jet", alpha=0.45, vmin=0.0, vmax=110.0, extent=extent)
            bar = figure.add_axes((0.88, 0.1, 0.03, 0.8))
            figure.colorbar(image, cax=bar).set_label("dose, % of prescription", fontsize=7, color="white")
            bar.tick_params(labelsize=7, colors="white")
        handles = []
        for n, structure in enumerate(shown):
            mask = contours[structure.name][tuple(section)]
            if mask.any():
                rows = (np.arange(mask.shape[0]) + 0.5) * row_mm
                cols = (np.arange(mask.shape[1]) + 0.5) * col_mm
                color = colors(n % 10)
                axes.contour(cols, rows, mask.astype(float), levels=[0.5], colors=[color], linewidths=1.0)
                handles.append(matplotlib.lines.Line2D([], [], color=color, label=labels[structure.name]))
        if view == "axial":
            _draw_beams(axes, case, angles_deg, isocenter_ras, (rows_axis, cols_axis), extent)
        if handles:
            axes.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.6)
        axes.set_title(f"{view} through the isocentre", fontsize=8, pad=-12, color="white")
        axes.set_xlim(extent[0], extent[1])
        axes.set_ylim(extent[2], extent[3])
        axes.set_axis_off()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        plt.close(figure)
        images.append((view, buffer.getvalue()))
    return images


def _draw_beams(axes, case: Case, angles_deg, isocenter_ras, plane, extent) -> None:
    """Each beam's central axis from where it enters the image to the isocentre, labelled with its gantry
    angle at the image edge (the source side)."""
    rows_axis, cols_axis = plane
    low = np.array([extent[0], extent[3]])  # (col, row) minimum
    high = np.array([extent[1], extent[2]])
    for angle in angles_deg:
        beam = BeamGeometry(float(angle), tuple(isocenter_ras), case.patient_position)
        upstream = np.asarray(isocenter_ras) - 100.0 * beam.direction_ras
        ends = display_position_mm(case.grid, np.array([upstream, isocenter_ras], dtype=float))
        iso = np.array([ends[1, cols_axis], ends[1, rows_axis]])
        step = np.array([ends[0, cols_axis], ends[0, rows_axis]]) - iso
        with np.errstate(divide="ignore", invalid="ignore"):
            limits = np.where(step > 0, (high - iso) / step, np.where(step < 0, (low - iso) / step, np.inf))
        reach = min(float(np.min(limits)), 10.0)
        edge, label_at = iso + 0.97 * reach * step, iso + 0.9 * reach * step  # the label inside the image
        axes.plot([edge[0], iso[0]], [edge[1], iso[1]], color="yellow", linewidth=1.2)
        axes.annotate(f"{angle:g}°", tuple(label_at), color="yellow", fontsize=7, ha="center", va="center")
