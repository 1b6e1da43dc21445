"""Plans a physicist would accept by default (issue 10): the default objective set, several dose levels,
refused inputs and overlap warnings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from test_patient import small_case_parts
from tg119_data import find_tg119_mat

from radagent.agents.pipeline import AgentRun, case_problems
from radagent.cases import load_case
from radagent.errors import InputError
from radagent.evaluate.dvh import hottest_minimum_gy
from radagent.geometry import Grid
from radagent.optimize.default_objectives import HELPER_PREFIX, default_objectives
from radagent.patient import Case, Protocol, Role, Structure
from radagent.plan import PlanSettings, plan_case
from radagent.request import PatientInput, PlanRequest, case_from_masks, run_plan


@pytest.fixture(scope="module")
def prostate4():
    return load_case("prostate-4oar", 0)


def test_the_default_set_gives_overlaps_to_the_target_and_shells_the_normal_tissue(prostate4):
    chosen = default_objectives(prostate4)
    helpers = {h.name: h.mask for h in chosen.helpers}
    ptv = prostate4.structure("PTV").mask
    rectum_outside = helpers[f"{HELPER_PREFIX}Rectum - targets"]
    assert not np.any(rectum_outside & ptv)
    assert np.array_equal(
        rectum_outside | (prostate4.structure("Rectum").mask & ptv), prostate4.structure("Rectum").mask
    )
    shells = [mask for name, mask in helpers.items() if "normal tissue" in name]
    union = np.logical_or.reduce(shells)
    assert int(sum(m.sum() for m in shells)) == int(union.sum())  # the shells do not overlap
    organs = np.logical_or.reduce([o.mask for o in prostate4.oars])
    assert np.array_equal(union, prostate4.body.mask & ~ptv & ~organs)
    limits = [o.reference_gy for o in chosen.objectives if o.structure.startswith(f"{HELPER_PREFIX}normal")]
    assert limits == sorted(limits, reverse=True) and limits[0] == pytest.approx(prostate4.prescription_gy)
    kinds = {(type(o).__name__, o.structure) for o in chosen.objectives}
    assert ("SquaredUnderdose", "PTV") in kinds and ("SquaredOverdose", "PTV") in kinds
    for oar in prostate4.oars:
        assert ("MeanDose", f"{HELPER_PREFIX}{oar.name} - targets") in kinds
        assert ("MaxDvh", f"{HELPER_PREFIX}{oar.name} - targets") in kinds


@pytest.mark.slow
def test_the_default_plan_spares_every_organ_and_keeps_the_target_homogeneous(prostate4):
    """At the default grids: every OAR's mean at least 20 % below the TPP objective's default-start plan
    (the plan before this set existed), target D95 = p and D2 ≤ 1.07 p, less dose outside the target."""
    default = plan_case(prostate4, PlanSettings())
    before = plan_case(prostate4, PlanSettings(objective_set="tpp"))
    new, old = default.evaluation, before.evaluation
    p = prostate4.prescription_gy
    assert new.structures["PTV"].d95_gy == pytest.approx(p, rel=1e-4)
    assert new.structures["PTV"].d2_gy <= 1.07 * p
    for oar in prostate4.oars:
        assert new.structures[oar.name].mean_gy <= 0.8 * old.structures[oar.name].mean_gy, oar.name
    assert new.body_minus_targets_mean_gy < old.body_minus_targets_mean_gy
    assert new.r50 < old.r50
    description = default.plan_description()
    assert description["objective_set"] == "default" and description["tpps"] is None
    assert {"type": "SquaredUnderdose", "structure": "PTV"}.items() <= description["objectives"][0].items()
    assert before.plan_description()["objective_set"] == "tpp"


@pytest.mark.slow
def test_the_plain_tg119_plan_meets_the_tg119_goals():
    """TG-119's C-shape from matRad's TG119.mat, 9 equispaced beams, default grids, no parameters."""
    path, why = find_tg119_mat()
    if path is None:
        pytest.skip(why)
    planned = run_plan(PlanRequest(patient=PatientInput(matrad=str(path)), beams=9))
    structures = planned.plan.evaluation.structures
    target = planned.plan.case.primary_target.name
    assert structures[target].d95_gy >= 50.0 - 1e-6
    assert structures[target].d10_gy <= 55.0
    assert structures["Core"].d10_gy <= 25.0


def _prostate_with_boost(prostate4: Case, erosion_mm: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    ptv = prostate4.structure("PTV").mask
    spacing = prostate4.grid.spacing_mm[::-1]
    boost = ndimage.distance_transform_edt(ptv, sampling=spacing) > erosion_mm
    return ptv, boost


def test_two_dose_levels_each_reach_their_prescription(prostate4):
    ptv, boost = _prostate_with_boost(prostate4)
    masks = [(s.name, s.mask) for s in prostate4.structures if s.role is not Role.TARGET]
    request = PlanRequest(
        targets=("PTV", "Boost"),
        oars=("Bladder", "Rectum"),
        target_levels_gy={"PTV": 70.0, "Boost": 79.2},
        bixel_mm=5.0,
        dose_grid_mm=4.0,
    ).validated()
    case = case_from_masks(
        request, prostate4.ct_hu, prostate4.grid, [("PTV", ptv), ("Boost", boost), *masks], name="sib"
    )
    assert case.prescription_gy == 79.2 and case.primary_target.name == "Boost"
    assert case.target_level_gy("PTV") == 70.0
    planned = run_plan(request, case)
    dose = planned.plan.dose_ct_gy
    assert hottest_minimum_gy(dose[boost], 0.95) == pytest.approx(79.2, rel=1e-4)  # normalized to the boost
    assert hottest_minimum_gy(dose[ptv], 0.95) >= 0.99 * 70.0
    levels = {level["name"]: level for level in planned.metrics()["plan"]["target_levels"]}
    assert levels["Boost"]["dose_level_gy"] == 79.2 and levels["PTV"]["dose_level_gy"] == 70.0
    assert levels["PTV"]["region_cc"] < planned.metrics()["structures"]["PTV"]["volume_cc"]  # PTV minus boost
    assert levels["PTV"]["d2_gy"] < 79.2  # the lower level's region is not the boost
    assert planned.metrics()["plan"]["primary_target"] == "Boost"


def test_a_simultaneous_boost_refuses_the_trained_agents_and_levels_above_the_prescription(prostate4):
    _, boost = _prostate_with_boost(prostate4)
    structures = (*prostate4.structures, Structure("Boost", Role.TARGET, boost, dose_gy=79.2))
    two = dataclasses.replace(
        prostate4,
        structures=tuple(dataclasses.replace(s, dose_gy=70.0) if s.name == "PTV" else s for s in structures),
    )
    problem = "dqn-tpp was trained on single-target plans; this case has 2 targets (PTV, Boost)"
    assert problem in case_problems(AgentRun("dqn-tpp"), two)
    request = PlanRequest(targets=("PTV", "Boost"), oars=("Rectum",), agents=("dqn-gantry",))
    assert "dqn-gantry was trained on single-target plans" in request.problems()[0]
    with pytest.raises(InputError, match=r"prescribed 80 Gy, above the prescription 79\.2 Gy"):
        dataclasses.replace(
            prostate4, structures=(*prostate4.structures, Structure("B", Role.TARGET, boost, 80.0))
        )
    with pytest.raises(InputError, match="a dose level is given for 'GTV', which is not a target"):
        PlanRequest(targets=("PTV",), target_levels_gy={"GTV": 70}).validated()


def test_overlaps_are_warned_with_their_volume_and_owner(prostate4):
    settings = PlanSettings(
        engine=dataclasses.replace(PlanSettings().engine, bixel_mm=10.0, dose_grid_mm=8.0)
    )
    warnings = plan_case(prostate4, settings).warnings
    rectum = np.count_nonzero(prostate4.structure("Rectum").mask & prostate4.structure("PTV").mask)
    expected = (
        f"organ at risk 'Rectum' overlaps target 'PTV' by {rectum * prostate4.grid.voxel_volume_cc:.1f} cc"
    )
    assert any(w.startswith(expected) and "the target's terms" in w for w in warnings)
    assert {w.split("'")[1] for w in warnings} == {"Bladder", "Rectum"}  # the femoral heads do not overlap
    tpp = plan_case(prostate4, dataclasses.replace(settings, objective_set="tpp")).warnings
    assert all("overlap included" in w for w in tpp)


def test_targets_outside_the_body_and_sheared_cts_are_refused():
    grid, ct, structures = small_case_parts()
    body, target, oar = structures
    poking = target.mask.copy()
    poking[0, 0, 0] = True  # one voxel outside the body
    with pytest.raises(InputError, match=r"target 'PTV' lies partly outside the body 'Body' \(0.03 cc"):
        Case("t", ct, grid, (body, Structure("PTV", Role.TARGET, poking), oar), Protocol(2.0))
    sheared = grid.ijk_to_ras.copy()
    sheared[0, 2] = 0.5  # the k axis leans towards x
    with pytest.raises(InputError, match=r"axes are \d+\.\d+° from perpendicular"):
        Case("t", ct, Grid(grid.shape, sheared), structures, Protocol(2.0))
    rotated = Grid.from_spacing(grid.shape, (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), direction=_rotation(20.0))
    Case("t", ct, rotated, structures, Protocol(2.0))  # oblique but orthogonal: fine


def _rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def test_nested_and_equal_level_targets_report_without_nan(prostate4, tmp_path):
    """A GTV inside its PTV at the same level, and an equal-level second target: every metric is a number
    or None, so metrics.json can be written."""
    import json

    ptv = prostate4.structure("PTV").mask
    _, inner = _prostate_with_boost(prostate4)
    masks = [(s.name, s.mask) for s in prostate4.structures if s.role is not Role.TARGET]
    request = PlanRequest(
        targets=("PTV", "GTV"), oars=("Rectum",), bixel_mm=10.0, dose_grid_mm=8.0, prescription_gy=70.0
    )
    case = case_from_masks(
        request, prostate4.ct_hu, prostate4.grid, [("PTV", ptv), ("GTV", inner), *masks], name="n"
    )
    metrics = run_plan(request, case).metrics()
    levels = {level["name"]: level for level in metrics["plan"]["target_levels"]}
    assert levels["GTV"]["region_cc"] == 0.0 and levels["GTV"]["homogeneity_index"] is None
    assert levels["PTV"]["conformity_index"] > 0.0  # the GTV inside it is not counted as spill
    json.dumps(metrics, allow_nan=False)


def test_a_target_without_a_level_needs_the_prescription():
    request = PlanRequest(
        patient=PatientInput(ct="ct.nrrd", structures="s.seg.nrrd"),
        targets=("PTV70", "PTV56"),
        target_levels_gy={"PTV56": 56.0},
    )
    with pytest.raises(InputError, match="give the prescription in Gy"):
        request.validated()
    leveled = dataclasses.replace(request, target_levels_gy={"PTV70": 70.0, "PTV56": 56.0}).validated()
    assert leveled.prescription() == 70.0


def test_the_primary_level_is_the_prescription(prostate4):
    below = dataclasses.replace(prostate4.structure("PTV"), dose_gy=60.0)
    structures = tuple(below if s.name == "PTV" else s for s in prostate4.structures)
    with pytest.raises(
        InputError, match=r"highest target dose level is 60 Gy, below the prescription 79\.2 Gy"
    ):
        dataclasses.replace(prostate4, structures=structures)


def test_normalization_to_another_target_or_a_non_target(prostate4):
    ptv, boost = _prostate_with_boost(prostate4)
    masks = [(s.name, s.mask) for s in prostate4.structures if s.role is not Role.TARGET]
    request = PlanRequest(
        targets=("PTV", "Boost"),
        oars=("Rectum",),
        target_levels_gy={"PTV": 70.0, "Boost": 79.2},
        normalization_target="PTV",
        bixel_mm=10.0,
        dose_grid_mm=6.0,
    ).validated()
    case = case_from_masks(
        request, prostate4.ct_hu, prostate4.grid, [("PTV", ptv), ("Boost", boost), *masks], name="n"
    )
    dose = run_plan(request, case).plan.dose_ct_gy
    assert hottest_minimum_gy(dose[ptv], 0.95) == pytest.approx(70.0, rel=1e-4)
    with pytest.raises(InputError, match="normalized to a target only; 'Bladder' is not one"):
        run_plan(
            PlanRequest(patient=PatientInput(case="prostate"), normalization_target="Bladder", bixel_mm=10.0)
        )
