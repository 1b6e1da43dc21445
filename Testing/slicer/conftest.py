"""Fixtures for the Slicer module's headless code, on real MRML from ``slicer-core`` (vtk 9.6.2).

Scenes are built the way a user's data arrives: a CT volume node (optionally with an oblique direction
matrix) and a segmentation node imported from labelmaps on the segmentation's own grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="slicer-core is needed: pip install -r Testing/requirements.txt"
)
import vtk  # noqa: E402 - after the skip above
from slicer.util import updateVolumeFromArray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "RadAgentSlicer"))

from RadAgentSlicerLib.batch import new_scene  # noqa: E402

from radagent.cases import load_case  # noqa: E402
from radagent.geometry import Grid, resample_mask  # noqa: E402

OARS = ["Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R"]


def vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            result.SetElement(r, c, float(matrix[r, c]))
    return result


def matrix_of(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def rotation_z(degrees: float) -> np.ndarray:
    """A 4×4 rotation about the superior axis (an oblique, non-axis-aligned CT)."""
    t = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return rotation


def add_volume(scene, name: str, array: np.ndarray, grid: Grid, node_class="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(node_class, name)
    updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(vtk_matrix(grid.ijk_to_ras))
    return node


def add_segmentation(scene, name: str, masks: dict[str, np.ndarray], grid: Grid):
    """A segmentation node with one segment per mask (masks on ``grid``; overlaps allowed)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    for segment, mask in masks.items():
        labelmap = add_volume(scene, segment, mask.astype(np.uint8), grid, "vtkMRMLLabelMapVolumeNode")
        assert logic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        scene.RemoveNode(labelmap)
    return segmentation


def coarser_grid(grid: Grid, factor: float = 1.5, shift_mm: float = 1.0) -> Grid:
    """A grid covering the same region with larger voxels, shifted by ``shift_mm`` along each axis."""
    matrix = grid.ijk_to_ras.copy()
    matrix[:3, :3] *= factor
    matrix[:3, 3] += shift_mm
    shape = tuple(int(np.ceil(n / factor)) + 1 for n in grid.shape)
    return Grid(shape, matrix)


@pytest.fixture(scope="session")
def prostate():
    """The bundled prostate case, variant 0."""
    return load_case("prostate", 0)


@pytest.fixture
def scene(tmp_path_factory):
    scene = new_scene(tmp_path_factory.mktemp("scene-cache"))
    yield scene
    scene.Clear(1)


def prostate_nodes(scene, case, oblique_deg: float = 0.0, segmentation_grid: Grid | None = None):
    """CT and segmentation nodes of ``case``; the CT rotated by ``oblique_deg`` about S, the segments
    resampled onto ``segmentation_grid`` (rotated alike) when given."""
    rotation = rotation_z(oblique_deg)
    ct_grid = Grid(case.grid.shape, rotation @ case.grid.ijk_to_ras)
    ct = add_volume(scene, "CT", case.ct_hu.astype(np.int16), ct_grid)
    if segmentation_grid is None:
        masks = {s.name: s.mask for s in case.structures}
        seg_grid = ct_grid
    else:
        masks = {s.name: resample_mask(s.mask, case.grid, segmentation_grid) for s in case.structures}
        seg_grid = Grid(segmentation_grid.shape, rotation @ segmentation_grid.ijk_to_ras)
    return ct, add_segmentation(scene, "Structures", masks, seg_grid)
