"""Renderings for the LLM agents (radagent.render): three planes, decodable, sized, deterministic."""

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from radagent.cases import load_case
from radagent.geometry import Grid
from radagent.render import canonical, display_position_mm, render_views


@pytest.fixture(scope="module")
def prostate():
    return load_case("prostate", 0)


def test_three_planes_as_sized_pngs_the_same_bytes_every_time(prostate):
    labels = {"PTV": "target (PTV)", "Rectum": "OAR 1 (Rectum)"}
    dose = np.where(prostate.structure("PTV").mask, prostate.prescription_gy, 0.0)
    views = render_views(prostate, dose, [0.0, 90.0], prostate.isocenter_ras, labels, size_px=300)
    assert [name for name, _ in views] == ["axial", "coronal", "sagittal"]
    for _, png in views:
        image = Image.open(BytesIO(png))
        assert image.format == "PNG" and image.size == (300, 300)
    again = render_views(prostate, dose, [0.0, 90.0], prostate.isocenter_ras, labels, size_px=300)
    assert [png for _, png in views] == [png for _, png in again]
    without = render_views(prostate, dose, [0.0, 180.0], prostate.isocenter_ras, labels, size_px=300)
    assert views[0][1] != without[0][1] and views[1][1] == without[1][1]  # beams are drawn on the axial plane


def test_the_display_frame_puts_the_patients_right_on_the_left_and_anterior_up(prostate):
    iso = np.asarray(prostate.isocenter_ras)
    right, anterior, superior = iso + 20.0 * np.eye(3)  # RAS: +x is the patient's right
    positions = display_position_mm(prostate.grid, np.array([iso, right, anterior, superior]))
    centre = positions[0]
    assert positions[1][2] < centre[2]  # right: the image's left (display axis 2 runs R→L)
    assert positions[2][1] < centre[1]  # anterior: up (display axis 1 runs A→P)
    assert positions[3][0] < centre[0]  # superior: up (display axis 0 runs S→I)


def _grid(direction: np.ndarray, spacing_mm=(2.0, 3.0, 4.0), shape_kji=(5, 6, 7)) -> Grid:
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.asarray(spacing_mm)  # columns: i, j, k
    matrix[:3, 3] = (10.0, -20.0, 30.0)
    return Grid(shape_kji, matrix)


def _rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    "direction",
    [
        np.eye(3),
        np.diag([-1.0, -1.0, 1.0]),  # a DICOM (LPS) lattice
        np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),  # permuted and flipped axes
        _rotation_z(10.0) @ np.diag([-1.0, 1.0, -1.0]),  # oblique
    ],
    ids=["ras", "lps", "permuted", "oblique"],
)
def test_canonical_pixels_and_display_positions_agree_and_keep_the_convention(direction):
    grid = _grid(direction)
    voxel_kji = (2, 3, 4)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[voxel_kji] = True
    image, spacing = canonical(mask, grid)
    (where,) = np.argwhere(image)
    centre = grid.ijk_to_ras_points(np.array([voxel_kji[::-1]]))[0]
    position = display_position_mm(grid, centre[None])[0]
    np.testing.assert_allclose(position / spacing - 0.5, where, atol=1e-6)  # the same frame
    step = grid.spacing_mm.max() * 1.5
    right, anterior, superior = display_position_mm(grid, centre + step * np.eye(3))
    assert right[2] < position[2] and anterior[1] < position[1] and superior[0] < position[0]


def _yellow(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    return np.nonzero((pixels[..., 0] > 200) & (pixels[..., 1] > 200) & (pixels[..., 2] < 80))


def test_a_beam_from_the_patients_left_is_drawn_from_the_images_right(prostate):
    iso = prostate.isocenter_ras
    rows, cols = _yellow(render_views(prostate, None, [0.0], iso, {}, size_px=300)[0][1])
    assert np.ptp(cols) < 0.2 * np.ptp(rows) and rows.min() < 100  # 0°: a vertical line from the top
    iso_col = float(np.median(cols))
    rows, cols = _yellow(render_views(prostate, None, [90.0], iso, {}, size_px=300)[0][1])
    assert np.ptp(rows) < 0.2 * np.ptp(cols)  # 90°: a horizontal line …
    assert cols.min() >= iso_col - 3 and cols.mean() > iso_col + 20  # … from the right (HFS: patient's left)
