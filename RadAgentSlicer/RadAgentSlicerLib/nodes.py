"""MRML nodes ↔ the core's arrays: volume geometry, segments on the CT grid, and the result nodes.

Only this module and :mod:`RadAgentSlicerLib.logic` touch MRML, always on the thread that owns the scene.
Arrays follow the core's convention ``[k, j, i]`` (what ``slicer.util.arrayFromVolume`` returns); a
volume's geometry is its 4×4 IJK→RAS matrix, oblique directions included. The dose volume is marked
the way SlicerRT's DICOM-RT import marks one, so its Dose Volume Histogram and Isodose modules take it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import slicer
import vtk
from slicer.util import arrayFromVolume, updateVolumeFromArray

from radagent.beams import BeamGeometry
from radagent.errors import InputError
from radagent.geometry import Grid

__all__ = [
    "DOSE_COLOR_TABLE",
    "DOSE_UNIT_NAME_ATTRIBUTE",
    "DOSE_UNIT_VALUE_ATTRIBUTE",
    "DOSE_VOLUME_ATTRIBUTE",
    "add_beam_models",
    "add_dose_volume",
    "add_dvh_chart",
    "add_dvh_table",
    "grid_of_volume",
    "plan_study_item",
    "segment_masks_on_volume",
    "segment_names",
    "volume_array",
]

# SlicerRT's names (SlicerRtCommon): a volume with this attribute is dose; its study item carries the unit.
DOSE_VOLUME_ATTRIBUTE = "DicomRtImport.DoseVolume"
DOSE_UNIT_NAME_ATTRIBUTE = "DicomRtImport.DoseUnitName"
DOSE_UNIT_VALUE_ATTRIBUTE = "DicomRtImport.DoseUnitValue"
DOSE_COLOR_TABLE = "Dose_ColorTable"  # SlicerRT's default dose colour table, reused when present
RADAGENT_COLOR_TABLE = "RadAgent_DoseColorTable"
BEAM_DRAW_LENGTH_MM = 300.0  # how far upstream of the isocentre a beam's model is drawn


def _matrix_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def grid_of_volume(volume: slicer.vtkMRMLVolumeNode) -> Grid:
    """The volume's voxel grid: array shape ``(k, j, i)`` and IJK→RAS (a parent transform is refused)."""
    image = volume.GetImageData()
    if image is None:
        raise InputError(f"volume '{volume.GetName()}' has no image data")
    if volume.GetParentTransformNode() is not None:
        raise InputError(f"volume '{volume.GetName()}' is under a transform; harden it first")
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    i, j, k = image.GetDimensions()
    return Grid((k, j, i), _matrix_array(matrix))


def volume_array(volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A copy of a scalar volume's voxels ``[k, j, i]``; vector (e.g. RGB) volumes are refused."""
    image = volume.GetImageData()
    if image is None:
        raise InputError(f"volume '{volume.GetName()}' has no image data")
    if image.GetNumberOfScalarComponents() != 1 or not volume.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"volume '{volume.GetName()}' is not a scalar volume (a CT in HU is needed)")
    return np.array(arrayFromVolume(volume), copy=True)


def segment_names(segmentation: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """The segments' names, in the segmentation's order."""
    seg = segmentation.GetSegmentation()
    return [seg.GetNthSegment(n).GetName() for n in range(seg.GetNumberOfSegments())]


def _segment_id(segmentation: slicer.vtkMRMLSegmentationNode, name: str) -> str:
    """The ID of the segment called ``name`` (exact, else a unique case-insensitive match)."""
    seg = segmentation.GetSegmentation()
    ids = [seg.GetNthSegmentID(n) for n in range(seg.GetNumberOfSegments())]
    exact = [i for i in ids if seg.GetSegment(i).GetName() == name]
    loose = [i for i in ids if seg.GetSegment(i).GetName().lower() == name.lower()]
    found = exact or (loose if len(loose) == 1 else [])
    if not found:
        known = ", ".join(segment_names(segmentation)) or "none"
        raise InputError(
            f"segmentation '{segmentation.GetName()}' has no segment '{name}' (segments: {known})"
        )
    return found[0]


def segment_masks_on_volume(
    scene: slicer.vtkMRMLScene,
    segmentation: slicer.vtkMRMLSegmentationNode,
    names: Sequence[str],
    reference: slicer.vtkMRMLScalarVolumeNode,
) -> dict[str, np.ndarray]:
    """Each named segment as a boolean mask ``[k, j, i]`` on ``reference``'s grid.

    Segments are exported one at a time through the Segmentations logic, so overlapping segments each
    keep all their voxels, and a segmentation on its own (coarser, shifted, oblique) grid is resampled
    onto the CT. Empty segments and segments entirely outside the CT are refused by name.
    """
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    if segmentation.GetParentTransformNode() is not None:
        raise InputError(f"segmentation '{segmentation.GetName()}' is under a transform; harden it first")
    segmentation.CreateBinaryLabelmapRepresentation()  # what the emptiness check reads
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "RadAgent export (temporary)")
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    masks: dict[str, np.ndarray] = {}
    try:
        for name in names:
            segment_id = _segment_id(segmentation, name)
            if _segment_is_empty(segmentation, segment_id):
                raise InputError(f"segment '{name}' is empty")
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, reference):
                raise InputError(f"segment '{name}' could not be exported onto the CT grid")
            mask = arrayFromVolume(labelmap) > 0
            if not mask.any():
                raise InputError(f"segment '{name}' lies outside the CT volume '{reference.GetName()}'")
            masks[name] = mask
    finally:  # the export also adds the labelmap's display and colour nodes: leave the scene as it was
        now = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
        for node in now:
            if node.GetID() not in before:
                scene.RemoveNode(node)
        scene.RemoveNode(labelmap)
    return masks


def _segment_is_empty(segmentation: slicer.vtkMRMLSegmentationNode, segment_id: str) -> bool:
    """True when the segment has no voxel (checked on its own binary labelmap, before any resampling)."""
    image = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, image)
    extent = image.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return True
    scalars = image.GetPointData().GetScalars()
    return scalars is None or scalars.GetRange()[1] <= 0


def plan_study_item(scene: slicer.vtkMRMLScene, ct: slicer.vtkMRMLScalarVolumeNode, name: str) -> int:
    """A subject-hierarchy study for the plan's nodes, carrying SlicerRT's dose unit (Gy).

    The study goes under the CT's patient (a new one when the CT has none), so the dose sits beside the
    images it was computed on.
    """
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    ct_item = hierarchy.GetItemByDataNode(ct)
    patient = 0
    item = hierarchy.GetItemParent(ct_item) if ct_item else 0
    while item and item != hierarchy.GetSceneItemID():
        if hierarchy.GetItemLevel(item) == "Patient":
            patient = item
            break
        item = hierarchy.GetItemParent(item)
    if not patient:
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), f"{ct.GetName()} (RadAgent)")
    study = hierarchy.CreateStudyItem(patient, name)
    hierarchy.SetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE, "Gy")
    hierarchy.SetItemAttribute(study, DOSE_UNIT_VALUE_ATTRIBUTE, "1.0")
    return study


def _place(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode, study: int) -> None:
    """Put ``node`` under the study item (creating its subject-hierarchy item outside the Slicer app)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, study)
    else:
        hierarchy.CreateItem(study, node)


def _dose_color_table(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """SlicerRT's dose colour table when the scene has it, else a 256-colour blue→red table of ours."""
    for name in (DOSE_COLOR_TABLE, RADAGENT_COLOR_TABLE):
        existing = scene.GetFirstNodeByName(name)
        if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
            return existing
    from matplotlib import colormaps

    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", RADAGENT_COLOR_TABLE)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    colors = colormaps["jet"](np.linspace(0.0, 1.0, 256))
    for index, (r, g, b, _) in enumerate(colors):
        table.SetColor(index, f"{index}", float(r), float(g), float(b), 1.0)
    table.SetAttribute("Category", "RadAgent")
    return table


def add_dose_volume(
    scene: slicer.vtkMRMLScene,
    dose_gy: np.ndarray,
    ct: slicer.vtkMRMLScalarVolumeNode,
    study: int,
    name: str,
    prescription_gy: float,
) -> slicer.vtkMRMLScalarVolumeNode:
    """A float dose volume in Gy on the CT's geometry, marked as dose, displayed 0–110 % of the
    prescription in the dose colour table with doses under 5 % transparent."""
    dose = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    updateVolumeFromArray(dose, np.ascontiguousarray(dose_gy, dtype=np.float32))
    dose.CopyOrientation(ct)
    dose.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "1")
    dose.CreateDefaultDisplayNodes()
    display = dose.GetDisplayNode()
    display.SetAndObserveColorNodeID(_dose_color_table(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.1 * prescription_gy)
    display.AutoThresholdOff()
    display.SetLowerThreshold(0.05 * prescription_gy)
    display.SetUpperThreshold(float(np.max(dose_gy)) + 1.0)
    display.ApplyThresholdOn()
    _place(scene, dose, study)
    return dose


def add_dvh_table(
    scene: slicer.vtkMRMLScene, columns: Mapping[str, np.ndarray], study: int, name: str
) -> slicer.vtkMRMLTableNode:
    """The DVH table: ``dose_gy`` then each structure's volume % receiving at least that dose."""
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    for column_name, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(column_name)
        array.SetNumberOfValues(len(values))
        for index, value in enumerate(np.asarray(values, dtype=np.float64)):
            array.SetValue(index, float(value))
        table.AddColumn(array)
    for column_name in columns:
        table_node.SetColumnUnitLabel(column_name, "Gy" if column_name == "dose_gy" else "%")
    table_node.SetUseColumnTitleAsColumnHeader(True)
    _place(scene, table_node, study)
    return table_node


def add_dvh_chart(
    scene: slicer.vtkMRMLScene, table: slicer.vtkMRMLTableNode, name: str
) -> slicer.vtkMRMLPlotChartNode:
    """A plot chart with one line per structure of the DVH table (dose in Gy against volume %)."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle("Dose (Gy)")
    chart.SetYAxisTitle("Volume (%)")
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    for index, column in enumerate(c for c in columns if c != "dose_gy"):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("dose_gy")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetColor(*palette[index % len(palette)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def _beam_polydata(beam: BeamGeometry, half_field_mm: float) -> vtk.vtkPolyData:
    """A beam drawn as a divergent pyramid from ``BEAM_DRAW_LENGTH_MM`` upstream to the isocentre plane
    (field ``2 × half_field_mm`` square), plus its central axis."""
    iso = np.asarray(beam.isocenter_ras)
    apex = iso - BEAM_DRAW_LENGTH_MM * beam.direction_ras
    scale = BEAM_DRAW_LENGTH_MM / beam.sad_mm  # the field at the drawn apex plane, shrunk by divergence
    corners = [
        iso + half_field_mm * (su * beam.u_axis_ras + sv * beam.v_axis_ras)
        for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    near = [apex + (c - iso) * (1.0 - scale) for c in corners]
    points = vtk.vtkPoints()
    for point in (*near, *corners, apex, iso):
        points.InsertNextPoint(*map(float, point))
    lines = vtk.vtkCellArray()
    for a, b in [(0, 4), (1, 5), (2, 6), (3, 7), (4, 5), (5, 6), (6, 7), (7, 4), (8, 9)]:
        lines.InsertNextCell(2)
        lines.InsertCellPoint(a)
        lines.InsertCellPoint(b)
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetLines(lines)
    return polydata


def add_beam_models(
    scene: slicer.vtkMRMLScene,
    beams: Sequence[BeamGeometry],
    half_field_mm: float,
    study: int,
    prefix: str,
) -> list[slicer.vtkMRMLModelNode]:
    """One model per beam (named by gantry angle) that the 3D view shows as a divergent field outline."""
    models = []
    for beam in beams:
        model = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{prefix} G{beam.gantry_deg:g}")
        model.SetAndObservePolyData(_beam_polydata(beam, half_field_mm))
        model.SetAttribute("RadAgent.GantryAngleDeg", f"{beam.gantry_deg:g}")
        model.CreateDefaultDisplayNodes()
        display = model.GetDisplayNode()
        display.SetColor(1.0, 0.85, 0.1)
        display.SetLineWidth(2.0)
        display.SetVisibility2D(False)
        _place(scene, model, study)
        models.append(model)
    return models
