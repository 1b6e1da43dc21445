"""Batch mode and the CLI on the same files: the Slicer path reproduces the CLI's plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import OARS, coarser_grid, rotation_z
from RadAgentSlicerLib.batch import main as batch_main

from radagent.cli import main as cli_main
from radagent.geometry import Grid, resample, resample_mask
from radagent.io.dicom_read import case_from_dicom, read_rtdose
from radagent.io.nrrd import read_volume, write_volume
from radagent.io.segmentation import write_segmentation

SCRIPT = Path(__file__).resolve().parents[2] / "RadAgentSlicer" / "RadAgentSlicerBatch.py"
ROLES = ["--target", "PTV", *[a for oar in OARS for a in ("--oar", oar)], "--fractions", "39"]
ROLES += ["--scorecard", "prostate", "--beams", "5"]


def _write_case(
    folder: Path, case, oblique_deg: float = 15.0, drop: str | None = None, own_grid: bool = True
) -> tuple[Path, Path]:
    """CT (oblique) and its segmentation, on a coarser, shifted grid of its own or on the CT's, as files."""
    folder.mkdir(parents=True, exist_ok=True)
    rotation = rotation_z(oblique_deg)
    ct_grid = Grid(case.grid.shape, rotation @ case.grid.ijk_to_ras)
    seg_grid = coarser_grid(case.grid) if own_grid else case.grid
    seg_grid = Grid(seg_grid.shape, rotation @ seg_grid.ijk_to_ras)
    write_volume(folder / "ct.nrrd", case.ct_hu.astype(np.int16), ct_grid)
    masks = [(s.name, resample_mask(s.mask, ct_grid, seg_grid)) for s in case.structures if s.name != drop]
    write_segmentation(folder / "structures.seg.nrrd", masks, seg_grid)
    return folder / "ct.nrrd", folder / "structures.seg.nrrd"


def _plan_both(case, tmp_path: Path, own_grid: bool) -> tuple[Path, Path]:
    """Plan the same files with the CLI and with batch mode (no agent, 5 equispaced beams)."""
    ct, segmentation = _write_case(tmp_path / "in", case, own_grid=own_grid)
    prescription = ["--prescription", f"{case.prescription_gy:g}"]
    cli = ["plan", "--ct", str(ct), "--structures", str(segmentation), *ROLES, *prescription, "--quiet"]
    assert cli_main([*cli, "--out", str(tmp_path / "cli")]) == 0
    batch = ["--ct", str(ct), "--segmentation", str(segmentation), *ROLES, *prescription, "--agent", "none"]
    assert batch_main([*batch, "--out", str(tmp_path / "batch"), "--save-scene"]) == 0
    return tmp_path / "cli", tmp_path / "batch"


def _outputs(folder: Path) -> tuple[np.ndarray, Grid, dict, dict]:
    dose, grid = read_volume(folder / "dose.nrrd")
    metrics = json.loads((folder / "metrics.json").read_text())
    return dose, grid, metrics, json.loads((folder / "plan.json").read_text())


def test_batch_plan_equals_the_cli_plan_on_an_oblique_ct(prostate, tmp_path):
    cli, batch = _plan_both(prostate, tmp_path, own_grid=False)
    assert sorted(p.name for p in batch.iterdir()) == [
        "dose.nrrd",
        "dvh.csv",
        "metrics.json",
        "plan.json",
        "scene.mrb",
    ]
    cli_dose, cli_grid, cli_metrics, cli_plan = _outputs(cli)
    dose, grid, metrics, plan = _outputs(batch)
    np.testing.assert_allclose(grid.ijk_to_ras, cli_grid.ijk_to_ras, atol=1e-6)
    assert not np.allclose(grid.ijk_to_ras[0, 1], 0.0)  # oblique
    # segments on the CT's grid: MRML export and the core's reader give the same masks, so the same plan
    np.testing.assert_allclose(dose, cli_dose, atol=1e-3 * prostate.prescription_gy)
    for name, values in cli_metrics["structures"].items():
        for key, value in values.items():
            expected = pytest.approx(value, rel=1e-4, abs=1e-3) if isinstance(value, float) else value
            assert metrics["structures"][name][key] == expected, (name, key)
    assert metrics["plan"]["score"] == pytest.approx(cli_metrics["plan"]["score"], abs=1e-3)
    assert plan["gantry_angles_deg"] == cli_plan["gantry_angles_deg"]
    np.testing.assert_allclose(plan["isocenter_ras_mm"], cli_plan["isocenter_ras_mm"], atol=1e-6)
    cli_dvh = np.genfromtxt(cli / "dvh.csv", delimiter=",", names=True)
    dvh = np.genfromtxt(batch / "dvh.csv", delimiter=",", names=True)
    assert dvh.dtype.names == cli_dvh.dtype.names
    for name in dvh.dtype.names:
        np.testing.assert_allclose(dvh[name], cli_dvh[name], atol=0.05)


@pytest.mark.slow
def test_batch_plan_matches_the_cli_within_resampling_on_a_segmentation_grid_of_its_own(prostate, tmp_path):
    """Slicer's Segmentations logic and the core resample a coarser segmentation differently at the
    boundaries (a few % of a structure's volume); the plans then agree within that."""
    cli, batch = _plan_both(prostate, tmp_path, own_grid=True)
    cli_dose, _, cli_metrics, _ = _outputs(cli)
    dose, _, metrics, _ = _outputs(batch)
    rx = prostate.prescription_gy
    assert np.abs(dose - cli_dose).mean() < 0.01 * rx
    for name, values in cli_metrics["structures"].items():
        assert metrics["structures"][name]["volume_cc"] == pytest.approx(values["volume_cc"], rel=0.06)
        assert metrics["structures"][name]["mean_gy"] == pytest.approx(values["mean_gy"], abs=0.04 * rx)
    assert metrics["structures"]["PTV"]["d95_gy"] == pytest.approx(rx, rel=1e-3)


def test_batch_directory_reports_failed_cases_and_keeps_the_others(prostate, tmp_path, capsys):
    _write_case(tmp_path / "cases" / "good", prostate, oblique_deg=0.0)
    _write_case(tmp_path / "cases" / "no_ptv", prostate, oblique_deg=0.0, drop="PTV")
    arguments = ["--cases", str(tmp_path / "cases"), *ROLES, "--prescription", "78", "--agent", "none"]
    assert batch_main([*arguments, "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "no_ptv: error: segmentation 'structures' has no segment 'PTV'" in captured.err
    assert "1 of 2 cases planned" in captured.out
    assert (tmp_path / "out" / "good" / "metrics.json").is_file()
    assert not (tmp_path / "out" / "no_ptv").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no staging left


def test_batch_exports_each_case_as_dicom_rt_that_the_core_reads_back(prostate, tmp_path, capsys):
    _write_case(tmp_path / "cases" / "good", prostate, oblique_deg=15.0, own_grid=False)
    arguments = ["--cases", str(tmp_path / "cases"), *ROLES, "--prescription", "78", "--agent", "none"]
    arguments += ["--dose-grid-mm", "6", "--bixel-mm", "10", "--anonymize"]
    arguments += ["--export-dicom", str(tmp_path / "rt")]
    assert batch_main([*arguments, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    folder = tmp_path / "rt" / "good"
    modalities = sorted(pydicom.dcmread(p, stop_before_pixels=True).Modality for p in folder.iterdir())
    assert modalities == ["CT"] * prostate.grid.shape[0] + ["RTDOSE", "RTPLAN", "RTSTRUCT"]
    imported = case_from_dicom(folder)
    dose, grid = read_volume(tmp_path / "out" / "good" / "dose.nrrd")
    np.testing.assert_allclose(imported.grid.ijk_to_ras, grid.ijk_to_ras, atol=1e-3)  # oblique, exact
    assert imported.dicom.patient_name.startswith("Anonymous")
    assert imported.prescription_gy == 78 and imported.protocol.fractions == 39
    rtdose, rtdose_grid = read_rtdose(folder / "RTDOSE.dcm")
    step_gy = float(pydicom.dcmread(folder / "RTDOSE.dcm", stop_before_pixels=True).DoseGridScaling)
    inside = resample(rtdose, rtdose_grid, grid, order=0)
    body = imported.body.mask
    assert np.abs(inside[body] - dose[body]).max() <= step_gy


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--ct", "ct.nrrd", "--segmentation", "s.nrrd", "--target", "PTV", "--anonymize", "--out", "x"],
            "--anonymize applies to --export-dicom",
        ),
        (
            ["--target", "PTV", "--prescription", "78", "--out", "x"],
            "one of the arguments --ct --cases is required",
        ),
        (
            ["--ct", "ct.nrrd", "--target", "PTV", "--prescription", "78", "--out", "x"],
            "--ct needs --segmentation",
        ),
        (
            ["--cases", "nowhere", "--target", "PTV", "--prescription", "78", "--out", "x"],
            "is not a directory",
        ),
    ],
)
def test_batch_script_bad_arguments_exit_2_with_one_line(tmp_path, arguments, message):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in run.stderr


def test_batch_keeps_what_the_user_had_and_skips_impossible_cases(prostate, tmp_path, capsys):
    _write_case(tmp_path / "cases" / "good", prostate, oblique_deg=0.0)
    bad = tmp_path / "cases" / "outside"
    _, segmentation = _write_case(bad, prostate, oblique_deg=0.0, own_grid=False)
    from radagent.io.segmentation import read_segmentation

    masks, grid = read_segmentation(segmentation)
    air = np.zeros(grid.shape, bool)
    air[-4:, :4, :4] = True  # a corner of the CT, in the air
    assert not np.any(air & dict(masks)["Body"])
    write_segmentation(segmentation, [(n, air if n == "PTV" else m) for n, m in masks], grid)
    out = tmp_path / "out"
    (out / "good").mkdir(parents=True)
    (out / "good" / "notes.txt").write_text("mine")
    (out / "readme.txt").write_text("mine too")
    arguments = ["--cases", str(tmp_path / "cases"), *ROLES, "--prescription", "78", "--dose-grid-mm", "6"]
    assert batch_main([*arguments, "--bixel-mm", "10", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "outside: error: target 'PTV' lies entirely outside the body 'Body'" in captured.err
    assert (out / "good" / "notes.txt").read_text() == "mine" and (
        out / "readme.txt"
    ).read_text() == "mine too"
    assert (out / "good" / "metrics.json").is_file() and not (out / "outside").exists()
    assert sorted(p.name for p in out.iterdir()) == ["good", "readme.txt"]  # no staging folder left


def test_batch_removes_its_scene_folders_after_a_failure(prostate, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    _write_case(tmp_path / "cases" / "no_ptv", prostate, oblique_deg=0.0, drop="PTV")
    arguments = ["--cases", str(tmp_path / "cases"), *ROLES, "--prescription", "78"]
    assert batch_main([*arguments, "--out", str(tmp_path / "out")]) == 1
    assert list(scratch.iterdir()) == []
