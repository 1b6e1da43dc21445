"""Our DICOM RT export read back by us (round trip) and by an independent reader (dicompyler-core)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_tools import dicompyler_dvhs, dose_at_volume, volume_at_dose

from radagent.cases import load_case
from radagent.cli import main
from radagent.dose import DoseEngineSettings
from radagent.evaluate.dvh import StructureDoses
from radagent.io.dicom_read import case_from_dicom, read_rtdose
from radagent.io.dicom_write import write_dicom_plan
from radagent.plan import PlanSettings, plan_case

MIN_CC = 5.0


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """An optimized prostate plan (coarse grids) and its DICOM RT export."""
    case = load_case("prostate")
    settings = PlanSettings(
        angles_deg=(0.0, 72.0, 144.0, 216.0, 288.0),
        engine=DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=6.0),
    )
    result = plan_case(case, settings)
    folder = tmp_path_factory.mktemp("roundtrip") / "rt"
    folder.mkdir()
    write_dicom_plan(folder, case, result.dose_ct_gy, result.plan_description())
    return case, result, folder


def _file(folder: Path, modality: str) -> Path:
    return next(
        p
        for p in sorted(folder.iterdir())
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == modality
    )


def test_export_then_import_gives_the_case_and_the_dose_back(planned):
    case, result, folder = planned
    imported = case_from_dicom(folder)
    assert imported.grid.shape == case.grid.shape
    assert np.abs(imported.grid.ijk_to_ras - case.grid.ijk_to_ras).max() <= 1e-3
    assert (
        imported.prescription_gy == case.prescription_gy
        and imported.protocol.fractions == case.protocol.fractions
    )
    for structure in case.structures:
        mask = imported.structure(structure.name).mask
        if structure.voxel_count * case.grid.voxel_volume_cc >= MIN_CC:
            overlap = 2 * np.count_nonzero(mask & structure.mask) / (mask.sum() + structure.voxel_count)
            assert overlap >= 0.97 and abs(mask.sum() / structure.voxel_count - 1) <= 0.01, structure.name
    dose, dose_grid = read_rtdose(_file(folder, "RTDOSE"))
    step_gy = float(pydicom.dcmread(_file(folder, "RTDOSE"), stop_before_pixels=True).DoseGridScaling)
    # The RTDOSE lies on the CT lattice: find where, and compare voxel by voxel.
    corner = np.rint(case.grid.ras_to_ijk_points(dose_grid.ijk_to_ras[:3, 3][None])[0]).astype(int)
    assert np.allclose(
        dose_grid.direction @ np.diag(dose_grid.spacing_mm), case.grid.ijk_to_ras[:3, :3], atol=1e-4
    )
    i, j, k = corner
    nk, nj, ni = dose.shape
    ours = result.dose_ct_gy[k : k + nk, j : j + nj, i : i + ni]
    assert np.abs(dose - ours).max() <= step_gy
    outside = result.dose_ct_gy.copy()
    outside[k : k + nk, j : j + nj, i : i + ni] = 0
    assert not np.any(outside[case.body.mask])  # the cropped box holds the whole body


def test_evaluate_reads_the_exported_rtdose_and_agrees_with_the_plan(planned, tmp_path, capsys):
    _, result, folder = planned
    rtdose = _file(folder, "RTDOSE")
    status = main(
        ["evaluate", "--dicom", str(folder), "--dose", str(rtdose), "--out", str(tmp_path / "e"), "--quiet"]
    )
    assert status == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    ours = result.evaluation.to_dict()
    for name in ("PTV", "Rectum", "Bladder"):
        for key in ("d95_gy", "d50_gy", "mean_gy"):
            assert metrics["structures"][name][key] == pytest.approx(ours["structures"][name][key], abs=0.01)


@pytest.mark.slow
def test_dicompyler_core_computes_the_same_dvhs_from_our_rtdose_and_rtstruct(planned):
    case, result, folder = planned
    prescription = case.prescription_gy
    dvhs = dicompyler_dvhs(_file(folder, "RTSTRUCT"), _file(folder, "RTDOSE"))
    checked = 0
    for structure in case.structures:
        ours = StructureDoses.from_mask(
            structure.name, result.dose_ct_gy, structure.mask, case.grid.voxel_volume_cc
        )
        if ours.volume_cc < MIN_CC:
            continue
        dvh = dvhs[structure.name]
        assert dvh["volume_cc"] == pytest.approx(ours.volume_cc, rel=0.01), structure.name
        for percent in (2.0, 50.0, 95.0, 98.0):
            difference = abs(dose_at_volume(dvh, percent) - ours.dose_at_percent_gy(percent))
            assert difference <= 0.02 * prescription, (structure.name, percent, difference)
        for fraction in (0.2, 0.5, 0.95, 1.0):
            level = fraction * prescription
            difference = abs(volume_at_dose(dvh, level) - 100 * ours.volume_fraction_at_gy(level))
            assert difference <= 2.0, (structure.name, level, difference)
        checked += 1
    assert checked == len(case.structures)  # every prostate structure is ≥ 5 cc


def test_the_cli_exports_a_case_from_files_and_refuses_anonymize_alone(tmp_path, capsys):
    status = main(["plan", "--case", "water", "--anonymize", "--out", str(tmp_path / "o"), "--quiet"])
    assert status == 2 and "--anonymize applies to --export-dicom" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    status = main(
        ["plan", "--case", "water", "--beams", "3", "--bixel-mm", "10", "--dose-grid-mm", "6", "--quiet",
         "--out", str(tmp_path / "o"), "--export-dicom", str(tmp_path / "rt"), "--anonymize"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    modalities = sorted(
        {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in (tmp_path / "rt").iterdir()}
    )
    assert modalities == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
    assert case_from_dicom(tmp_path / "rt").dicom.patient_name != "water"
