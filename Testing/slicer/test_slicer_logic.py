"""PlanningLogic on real MRML: geometry, SlicerRT attributes, DVH/metrics consistency, bad inputs, saving."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from conftest import OARS, add_segmentation, add_volume, coarser_grid, matrix_of, prostate_nodes
from RadAgentSlicerLib import nodes
from RadAgentSlicerLib.batch import new_scene
from RadAgentSlicerLib.logic import PlanningLogic
from slicer.util import arrayFromVolume

from radagent.errors import InputError
from radagent.evaluate.metrics import dvh_table, evaluate_plan
from radagent.progress import Cancelled

FAST = {"agent": None, "beams": 5}  # no agent: one plan, a few seconds


def _plan(scene, ct, segmentation, case, **kwargs):
    options = {**FAST, "oars": OARS, "scorecard": "prostate", **kwargs}
    return PlanningLogic(scene).plan(
        ct, segmentation, targets=["PTV"], prescriptionGy=case.prescription_gy, fractions=39, **options
    )


def _table_columns(table_node) -> dict[str, np.ndarray]:
    table = table_node.GetTable()
    return {
        table.GetColumnName(c): np.array(
            [table.GetValue(r, c).ToDouble() for r in range(table.GetNumberOfRows())]
        )
        for c in range(table.GetNumberOfColumns())
    }


def _study_of(scene, node) -> int:
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))


def test_oblique_ct_and_segmentation_on_its_own_grid(scene, prostate):
    ct, segmentation = prostate_nodes(
        scene, prostate, oblique_deg=20.0, segmentation_grid=coarser_grid(prostate.grid)
    )
    result = _plan(scene, ct, segmentation, prostate)
    dose = result.doseVolumeNode
    np.testing.assert_allclose(matrix_of(dose), matrix_of(ct), atol=1e-9)  # oblique directions included
    assert not np.allclose(matrix_of(ct)[:3, :3], np.diag(np.diag(matrix_of(ct)[:3, :3])))
    assert arrayFromVolume(dose).shape == arrayFromVolume(ct).shape
    assert dose.GetImageData().GetScalarTypeAsString() == "float"
    dose_gy = arrayFromVolume(dose)
    # the case the logic planned is the nodes' case; its evaluation of the node's dose is the metrics
    evaluation = evaluate_plan(result.case, dose_gy.astype(np.float64))
    assert evaluation.structures["PTV"].d95_gy == pytest.approx(prostate.prescription_gy, rel=2e-3)
    assert result.metrics["plan"]["score"] == pytest.approx(evaluation.score, abs=1e-3)
    for name, values in result.metrics["structures"].items():
        assert values["mean_gy"] == pytest.approx(evaluation.structures[name].mean_gy, rel=1e-4, abs=1e-4)
    # the segments were resampled from their coarser, shifted grid onto the oblique CT
    ptv = result.case.structure("PTV").mask
    assert abs(ptv.sum() / prostate.structure("PTV").mask.sum() - 1) < 0.1


def test_dose_node_is_slicerrt_dose_with_dvh_table_and_beams(scene, prostate):
    ct, segmentation = prostate_nodes(scene, prostate)
    result = _plan(scene, ct, segmentation, prostate)
    dose = result.doseVolumeNode
    assert dose.GetAttribute(nodes.DOSE_VOLUME_ATTRIBUTE) == "1"
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = _study_of(scene, dose)
    assert study == result.studyItemID
    assert hierarchy.GetItemLevel(study) == "Study"
    assert hierarchy.GetItemAttribute(study, nodes.DOSE_UNIT_NAME_ATTRIBUTE) == "Gy"
    assert float(hierarchy.GetItemAttribute(study, nodes.DOSE_UNIT_VALUE_ATTRIBUTE)) == 1.0
    assert hierarchy.GetItemLevel(hierarchy.GetItemParent(study)) == "Patient"
    display = dose.GetDisplayNode()
    assert display.GetColorNode().GetName() == "RadAgent_DoseColorTable"
    assert display.GetWindowLevelMin() == pytest.approx(0.0)
    assert display.GetWindowLevelMax() == pytest.approx(1.1 * prostate.prescription_gy)
    # DVH table: the core's DVH of the node's dose on the planned case
    columns = _table_columns(result.dvhTableNode)
    expected = dvh_table(result.case, arrayFromVolume(dose).astype(np.float64))
    assert list(columns) == list(expected)
    for name in expected:
        np.testing.assert_allclose(columns[name], expected[name], atol=1e-9)
    assert _study_of(scene, result.dvhTableNode) == study
    assert result.dvhChartNode.GetNumberOfPlotSeriesNodes() == len(expected) - 1
    # one beam model per planned angle, under the study
    angles = result.description["gantry_angles_deg"]
    assert [float(b.GetAttribute("RadAgent.GantryAngleDeg")) for b in result.beamNodes] == pytest.approx(
        angles
    )
    assert all(b.GetPolyData().GetNumberOfLines() == 9 for b in result.beamNodes)
    assert result.rtPlanNode is None  # slicer-core has no SlicerRT


def test_overlapping_segments_keep_all_their_voxels(scene, prostate):
    ct_grid = prostate.grid
    ptv = prostate.structure("PTV").mask
    overlap = ptv.copy()
    overlap[:, :, : ptv.shape[2] // 2] = False  # half the PTV, entirely inside it
    ct = add_volume(scene, "CT", prostate.ct_hu.astype(np.int16), ct_grid)
    segmentation = add_segmentation(scene, "S", {"PTV": ptv, "Boost": overlap}, ct_grid)
    masks = nodes.segment_masks_on_volume(scene, segmentation, ["PTV", "Boost"], ct)
    np.testing.assert_array_equal(masks["PTV"], ptv)
    np.testing.assert_array_equal(masks["Boost"], overlap)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"targets": []}, "choose at least one target segment"),
        ({"targets": ["Prostate"]}, "no segment 'Prostate'"),
        ({"prescriptionGy": 0.0}, "prescription must be a positive dose"),
        ({"oars": ["Empty"]}, "segment 'Empty' is empty"),
        ({"oars": ["Outside"]}, "lies outside the CT volume"),
        ({"agent": "dqn-tpp", "scorecard": None}, "dqn-tpp tunes TPPs on a score card"),
        (
            {"agent": "dqn-gantry", "oars": ["Rectum"], "scorecard": None},
            "trained on 2 scored organs at risk",
        ),
        ({"agent": "no-such-agent"}, "unknown agent 'no-such-agent'"),
        ({"agent": "greedy", "depth": 3}, "agent 'greedy' has no option 'depth'"),
    ],
)
def test_bad_inputs_raise_before_any_node_is_created(scene, prostate, change, message):
    ct, segmentation = prostate_nodes(scene, prostate)
    far = prostate.grid.ijk_to_ras.copy()
    far[:3, 3] += 5000.0  # 5 m away from the CT
    outside = np.zeros((4, 4, 4), np.uint8)
    outside[1:3, 1:3, 1:3] = 1
    from radagent.geometry import Grid

    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    for name, grid in (("Outside", Grid((4, 4, 4), far)), ("Empty", prostate.grid)):
        labelmap = add_volume(
            scene, name, outside if name == "Outside" else outside * 0 + 1, grid, "vtkMRMLLabelMapVolumeNode"
        )
        assert logic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        scene.RemoveNode(labelmap)
    empty_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Empty")
    slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(segmentation, empty_id)
    before = scene.GetNumberOfNodes()
    arguments = {"targets": ["PTV"], "oars": OARS, "prescriptionGy": 78.0, "scorecard": "prostate", **FAST}
    arguments.update(change)
    with pytest.raises(InputError, match=message):
        PlanningLogic(scene).plan(ct, segmentation, **arguments)
    assert scene.GetNumberOfNodes() == before


def test_ct_must_be_a_scalar_volume(scene, prostate):
    _, segmentation = prostate_nodes(scene, prostate)
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "RGB")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((*prostate.grid.shape, 3), np.uint8))
    with pytest.raises(InputError, match="not a scalar volume"):
        PlanningLogic(scene).plan(rgb, segmentation, ["PTV"], OARS, 78.0, **FAST)


def test_cancel_from_progress_leaves_the_scene_unchanged(scene, prostate):
    ct, segmentation = prostate_nodes(scene, prostate)
    before = scene.GetNumberOfNodes()
    messages = []

    def progress(fraction, message):
        messages.append(message)
        return len(messages) < 3

    with pytest.raises(Cancelled):
        _plan(scene, ct, segmentation, prostate, progress=progress)
    assert scene.GetNumberOfNodes() == before


def _saved_results_intact(reloaded, result, dose_gy, table):
    dose = reloaded.GetFirstNodeByName(result.doseVolumeNode.GetName())
    assert dose is not None and dose.GetAttribute(nodes.DOSE_VOLUME_ATTRIBUTE) == "1"
    np.testing.assert_allclose(arrayFromVolume(dose), dose_gy, atol=1e-6)
    np.testing.assert_allclose(matrix_of(dose), matrix_of(result.doseVolumeNode), atol=1e-6)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(reloaded)
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(dose))
    assert hierarchy.GetItemAttribute(study, nodes.DOSE_UNIT_NAME_ATTRIBUTE) == "Gy"
    reloaded_table = reloaded.GetFirstNodeByName(result.dvhTableNode.GetName())
    for name, values in _table_columns(reloaded_table).items():
        np.testing.assert_allclose(values, table[name], rtol=1e-5, atol=1e-6)


def test_scene_saved_as_mrb_and_mrml_reloads_with_results(scene, prostate, tmp_path):
    ct, segmentation = prostate_nodes(scene, prostate)
    result = _plan(scene, ct, segmentation, prostate)
    dose_gy = arrayFromVolume(result.doseVolumeNode).copy()
    table = _table_columns(result.dvhTableNode)
    assert scene.WriteToMRB(str(tmp_path / "plan.mrb"))
    reloaded = new_scene(tmp_path / "cache")
    assert reloaded.ReadFromMRB(str(tmp_path / "plan.mrb"))
    _saved_results_intact(reloaded, result, dose_gy, table)
    # .mrml with each node's data beside it
    folder = tmp_path / "mrml"
    folder.mkdir()
    for node in (ct, segmentation, result.doseVolumeNode, result.dvhTableNode, *result.beamNodes):
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        suffix = storage.GetDefaultWriteFileExtension() or "seg.nrrd"  # segmentations report none
        storage.SetFileName(str(folder / f"{node.GetID()}.{suffix}"))
        node.SetAndObserveStorageNodeID(storage.GetID())
        assert storage.WriteData(node)
    scene.SetRootDirectory(str(folder))
    scene.SetURL(str(folder / "plan.mrml"))
    assert scene.Commit()
    reloaded = new_scene(tmp_path / "cache")
    reloaded.SetURL(str(folder / "plan.mrml"))
    assert reloaded.Connect()
    _saved_results_intact(reloaded, result, dose_gy, table)


@pytest.mark.slow
def test_shipped_dqn_agents_plan_segments_named_in_another_case(scene, prostate):
    """The trained agents map segments by role: lower-case names still meet the prostate card."""
    ct = add_volume(scene, "CT", prostate.ct_hu.astype(np.int16), prostate.grid)
    masks = {s.name.lower(): s.mask for s in prostate.structures}
    segmentation = add_segmentation(scene, "S", masks, prostate.grid)
    logic = PlanningLogic(scene)
    choices = {"agent": "dqn-gantry", "tppAgent": "dqn-tpp", "scorecard": "prostate"}
    assert logic.request(["ptv"], ["bladder", "rectum"], **choices).problems() == []
    assert logic.request(["ptv"], ["rectum"], **choices).problems()  # the card's Bladder is missing
    result = logic.plan(
        ct,
        segmentation,
        targets=["ptv"],
        oars=["bladder", "rectum", "femoralhead_l", "femoralhead_r"],
        prescriptionGy=prostate.prescription_gy,
        fractions=39,
        agent="dqn-gantry",
        tppAgent="dqn-tpp",
        scorecard="prostate",
    )
    agents = result.description["agents"]
    assert [a["agent"] for a in agents] == ["dqn-gantry", "dqn-tpp"]
    assert result.description["gantry_angles_deg"] == agents[0]["angles_deg"]
    assert len(result.beamNodes) == 7
    assert set(result.metrics["structures"]) == {
        "body",
        "PTV",
        "Bladder",
        "Rectum",
        "femoralhead_l",
        "femoralhead_r",
    }
    assert result.metrics["plan"]["score"] >= agents[1]["history"][0]["score"] - 1.0  # tuned, not ruined
