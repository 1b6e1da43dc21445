"""The plan report figure: cumulative DVHs and a dose colour-wash on three planes through the target, in
the display convention of :mod:`radagent.render`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radagent import RESEARCH_USE_ONLY
from radagent.evaluate.metrics import plan_summary
from radagent.io.atomic import atomic_path
from radagent.patient import Case, Role
from radagent.render import canonical

__all__ = ["summary_lines", "write_report"]

_ROLE_STYLES = {Role.TARGET: "-", Role.OAR: "--", Role.BODY: ":"}


def _slice_positions(target: np.ndarray) -> tuple[int, int, int]:
    """Indices in the canonical volume of the planes through the target's centre of mass."""
    centre = np.array(np.nonzero(target)).mean(axis=1)
    return tuple(int(np.rint(c)) for c in centre)


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The report's text panel: prescription, score and reward, HI and CI, each structure's mean, D2 and
    D95, and each score-card criterion's value and sub-score."""
    plan = metrics["plan"]
    lines = [
        f"prescription {plan['prescription_gy']:g} Gy",
        plan_summary(plan),
        f"HI {plan['homogeneity_index']:.3f}   CI {plan['conformity_index']:.3f}",
        "",
        f"{'structure':<14}{'mean':>7}{'D2':>7}{'D95':>7}",
    ]
    for name, values in metrics["structures"].items():
        lines.append(
            f"{name[:13]:<14}{values['mean_gy']:>7.1f}{values['d2_gy']:>7.1f}{values['d95_gy']:>7.1f}"
        )
    for criterion in plan.get("criteria", []):
        lines.append(f"{criterion['label'][:28]:<29}{criterion['value']:.3f} → {criterion['subscore']:.2f}")
    return lines


def write_report(
    path: str | os.PathLike,
    case: Case,
    dose_ct_gy: np.ndarray,
    dvh: Mapping[str, np.ndarray],
    summary_lines: Sequence[str] = (),
) -> Path:
    """Render the DVH and dose colour-wash figure to a PNG (written to a temporary name, then renamed);
    ``dvh`` holds the DVH table's columns (``dose_gy``, then each structure's volume %)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    prescription = case.prescription_gy
    ct, spacing = canonical(case.ct_hu, case.grid)
    dose, _ = canonical(np.asarray(dose_ct_gy, dtype=np.float32), case.grid)
    target, _ = canonical(case.target_mask(), case.grid)
    contours = {s.name: canonical(s.mask, case.grid)[0] for s in case.structures}
    s_index, a_index, r_index = _slice_positions(target)

    figure = plt.figure(figsize=(15, 9), constrained_layout=True)
    grid_spec = figure.add_gridspec(2, 3, height_ratios=[1.0, 1.0])
    dvh_axes = figure.add_subplot(grid_spec[0, :2])
    colors = plt.get_cmap("tab10")
    structure_colors = {s.name: colors(n % 10) for n, s in enumerate(case.structures)}
    for structure in case.structures:
        if structure.name not in dvh:
            continue
        dvh_axes.plot(
            dvh["dose_gy"],
            dvh[structure.name],
            _ROLE_STYLES[structure.role],
            color=structure_colors[structure.name],
            label=f"{structure.name} ({structure.role.value})",
        )
    dvh_axes.axvline(prescription, color="grey", lw=0.8)
    dvh_axes.set_xlabel("dose (Gy)")
    dvh_axes.set_ylabel("volume (%)")
    dvh_axes.set_ylim(0, 102)
    dvh_axes.set_xlim(0, max(1.2 * prescription, float(np.max(dose_ct_gy)) * 1.02))
    dvh_axes.grid(alpha=0.3)
    dvh_axes.legend(loc="upper right", fontsize=8)
    dvh_axes.set_title(f"{case.name}: cumulative DVH (prescription {prescription:g} Gy)")

    text_axes = figure.add_subplot(grid_spec[0, 2])
    text_axes.axis("off")
    text_axes.text(0.0, 1.0, "\n".join(summary_lines), va="top", family="monospace", fontsize=8)
    figure.text(0.5, 0.002, RESEARCH_USE_ONLY, ha="center", va="bottom", fontsize=8, color="darkred")

    planes = [
        ("axial", ct[s_index], dose[s_index], {n: m[s_index] for n, m in contours.items()}, spacing[[1, 2]]),
        (
            "coronal",
            ct[:, a_index],
            dose[:, a_index],
            {n: m[:, a_index] for n, m in contours.items()},
            spacing[[0, 2]],
        ),
        (
            "sagittal",
            ct[:, :, r_index],
            dose[:, :, r_index],
            {n: m[:, :, r_index] for n, m in contours.items()},
            spacing[[0, 1]],
        ),
    ]
    dose_max = max(float(np.max(dose_ct_gy)), 1e-6)
    for column, (title, ct_slice, dose_slice, contour_slices, (row_mm, col_mm)) in enumerate(planes):
        axes = figure.add_subplot(grid_spec[1, column])
        extent = (0, ct_slice.shape[1] * col_mm, ct_slice.shape[0] * row_mm, 0)
        axes.imshow(ct_slice, cmap="gray", vmin=-300, vmax=400, extent=extent, interpolation="nearest")
        wash = np.ma.masked_less(dose_slice, 0.1 * prescription)
        image = axes.imshow(wash, cmap="jet", alpha=0.45, vmin=0, vmax=dose_max, extent=extent)
        for name, mask in contour_slices.items():
            if mask.any():
                rows_mm = (np.arange(mask.shape[0]) + 0.5) * row_mm  # same frame as the imshow extent
                cols_mm = (np.arange(mask.shape[1]) + 0.5) * col_mm
                axes.contour(
                    cols_mm,
                    rows_mm,
                    mask.astype(float),
                    levels=[0.5],
                    colors=[structure_colors[name]],
                    linewidths=0.9,
                )
        axes.set_title(f"{title} through the target centre")
        axes.set_axis_off()
        figure.colorbar(image, ax=axes, shrink=0.7, label="dose (Gy)")

    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=90, format="png")
    finally:
        plt.close(figure)
    return path
