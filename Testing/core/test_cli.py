"""The `radagent` command line as a user meets it: outputs, metrics, and one-line errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from radagent.cli import main
from radagent.geometry import Grid
from radagent.io.nrrd import read_volume, write_volume
from radagent.io.segmentation import write_segmentation

STRUCTURE_KEYS = {
    "role",
    "volume_cc",
    "mean_gy",
    "max_gy",
    "min_gy",
    "d0_03cc_gy",
    "d2_gy",
    "d5_gy",
    "d10_gy",
    "d50_gy",
    "d95_gy",
    "d98_gy",
}
FAST = ["--beams", "3", "--bixel-mm", "10", "--dose-grid-mm", "6", "--quiet"]


def file_inputs(folder):
    """The patient-input arguments for the CT + segmentation pair of ``phantom_files``."""
    ct, seg = folder / "ct.nrrd", folder / "structures.seg.nrrd"
    return ["--ct", ct, "--structures", seg, "--target", "PTV", "--oar", "Cord", "--prescription", "60"]


def run_cli(capsys, *args):
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """A small CT + seg.nrrd pair on different grids (the segmentation finer and shifted)."""
    folder = tmp_path_factory.mktemp("phantom")
    grid = Grid.from_spacing((24, 30, 36), (4.0, 4.0, 4.0), (-70.0, -58.0, -46.0))
    ras = grid.voxel_centers_ras().reshape(*grid.shape, 3)
    body = (ras[..., 0] / 60.0) ** 2 + (ras[..., 1] / 45.0) ** 2 <= 1.0
    ct = np.where(body, 20.0, -1000.0).astype(np.float32)
    write_volume(folder / "ct.nrrd", ct, grid)
    seg_grid = Grid.from_spacing((40, 50, 60), (2.0, 2.0, 2.0), (-60.0, -50.0, -40.0))
    seg_ras = seg_grid.voxel_centers_ras().reshape(*seg_grid.shape, 3)
    ptv = np.linalg.norm(seg_ras, axis=-1) <= 15.0
    cord = np.linalg.norm(seg_ras[..., :2] - [0.0, -30.0], axis=-1) <= 6.0
    seg_body = (seg_ras[..., 0] / 60.0) ** 2 + (seg_ras[..., 1] / 45.0) ** 2 <= 1.0
    write_segmentation(
        folder / "structures.seg.nrrd", [("External", seg_body), ("PTV", ptv), ("Cord", cord)], seg_grid
    )
    empty = np.zeros(seg_grid.shape, bool)
    write_segmentation(
        folder / "empty.seg.nrrd", [("External", seg_body), ("PTV", ptv), ("Cord", empty)], seg_grid
    )
    far_grid = Grid.from_spacing(seg_grid.shape, (2.0, 2.0, 2.0), (600.0, 600.0, 600.0))
    write_segmentation(folder / "far.seg.nrrd", [("External", seg_body), ("PTV", ptv)], far_grid)
    nan_ct = ct.copy()
    nan_ct[5, 5, 5] = np.nan
    write_volume(folder / "nan_ct.nrrd", nan_ct, grid)
    return folder


def test_cases_lists_every_built_in_case(capsys):
    status, out, _ = run_cli(capsys, "cases")
    assert status == 0
    for name in ("prostate", "prostate-4oar", "liver", "cshape", "water"):
        assert name in out
    assert "79.2 Gy / 44 fx" in out


def test_plan_from_files_writes_all_outputs(capsys, tmp_path, phantom_files):
    out = tmp_path / "results" / "plan"  # parents are created, as for the README's results/prostate
    status, _, err = run_cli(
        capsys, "plan", *file_inputs(phantom_files), "--fractions", "30", "--out", out, *FAST
    )
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "dose.nrrd",
        "dvh.csv",
        "metrics.json",
        "plan.json",
        "report.png",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["structures"]) == {"External", "PTV", "Cord"}
    for values in metrics["structures"].values():
        assert set(values) >= STRUCTURE_KEYS
    assert metrics["structures"]["PTV"]["d95_gy"] == pytest.approx(60.0, rel=0.03)
    assert metrics["structures"]["External"]["role"] == "body"
    for key in ("prescription_gy", "homogeneity_index", "conformity_index", "score", "score_max", "reward"):
        assert key in metrics["plan"]
    assert {"n_beamlets", "nnz", "megabytes"} <= set(metrics["dij"])
    assert {"dose_engine", "optimization", "total"} <= set(metrics["timing_s"])
    dose, dose_grid = read_volume(out / "dose.nrrd")
    ct, ct_grid = read_volume(phantom_files / "ct.nrrd")
    assert dose.shape == ct.shape and dose_grid.same_as(ct_grid)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["gantry_angles_deg"] == [0.0, 120.0, 240.0]
    assert len(plan["isocenter_ras_mm"]) == 3 and plan["n_beamlets"] == metrics["dij"]["n_beamlets"]
    assert "PTV" in (out / "dvh.csv").read_text().splitlines()[0]

    # Evaluating the written dose reproduces the plan's metrics.
    again = tmp_path / "evaluated"
    status, _, err = run_cli(
        capsys,
        "evaluate",
        "--dose",
        out / "dose.nrrd",
        *file_inputs(phantom_files),
        "--out",
        again,
        "--quiet",
    )
    assert status == 0, err
    evaluated = json.loads((again / "metrics.json").read_text())
    for name, values in metrics["structures"].items():
        assert evaluated["structures"][name]["d95_gy"] == pytest.approx(values["d95_gy"], rel=1e-3, abs=1e-3)
    assert evaluated["plan"]["score"] == pytest.approx(metrics["plan"]["score"], abs=1e-3)


def bad_input_cases(files):
    """(arguments, text expected in the one-line error) for inputs a new user gets wrong."""
    ct, seg = files / "ct.nrrd", files / "structures.seg.nrrd"
    base = ["--target", "PTV", "--prescription", "60"]
    return [
        (["--ct", files / "missing.nrrd", "--structures", seg, *base], "missing.nrrd"),
        (["--ct", ct, "--structures", files / "missing.seg.nrrd", *base], "missing.seg.nrrd"),
        (["--ct", ct, "--structures", seg, "--target", "Prostate", "--prescription", "60"], "Prostate"),
        (["--ct", ct, "--structures", seg, *base, "--oar", "Bladder"], "Bladder"),
        (["--ct", ct, "--structures", files / "empty.seg.nrrd", *base, "--oar", "Cord"], "empty"),
        (["--ct", files / "nan_ct.nrrd", "--structures", seg, *base], "NaN"),
        (["--ct", ct, "--structures", seg, "--target", "PTV", "--prescription", "0"], "positive"),
        (["--ct", ct, "--structures", seg, "--target", "PTV", "--prescription", "-5"], "positive"),
        (["--ct", ct, "--structures", seg, *base, "--angles", "0,90,400"], "out of range"),
        (["--ct", ct, "--structures", seg, *base, "--angles", "0,abc"], "not a number"),
        (["--ct", ct, "--structures", seg, "--prescription", "60"], "--target"),
        (["--case", "prostrate"], "prostrate"),
        (["--case", "prostate", "--variant", "-1"], "--variant"),
        (["--ct", ct, "--structures", seg, *base, "--bixel-mm", "0"], "positive"),
        (["--matrad", files / "missing.mat"], "missing.mat"),
        (["--matrad", ct], "mat"),
        (["--ct", ct, "--structures", ct, *base], "PTV"),
        (["--ct", ct, "--structures", files / "far.seg.nrrd", *base], "does not overlap the CT"),
    ]


BAD_INPUT_COUNT = 18


@pytest.mark.parametrize("index", range(BAD_INPUT_COUNT))
def test_bad_inputs_give_one_line_and_write_nothing(capsys, tmp_path, phantom_files, index):
    cases = bad_input_cases(phantom_files)
    assert len(cases) == BAD_INPUT_COUNT
    arguments, expected = cases[index]
    out = tmp_path / "nested" / "out"
    status, _, err = run_cli(capsys, "plan", *arguments, "--out", out, "--quiet")
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("radagent: error:") and expected in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # no output, no staging folder, no parent folder


def test_argument_errors_exit_2_with_one_line(tmp_path):
    """Errors caught by argparse (bad numbers) also exit 2 with one line and no traceback."""
    for arguments in (["--case", "water", "--variant", "-1"], ["--case", "water", "--bixel-mm", "0"]):
        result = subprocess.run(
            [sys.executable, "-m", "radagent.cli", "plan", *arguments, "--out", str(tmp_path / "x")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("radagent: error:"), result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_tpp_options_reach_the_optimizer(capsys, tmp_path):
    out = tmp_path / "tuned"
    status, _, err = run_cli(capsys, "plan", "--case", "water", "--tpp", "lambda_PTV=7", "--out", out, *FAST)
    assert status == 0, err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["tpps"]["lambda_PTV"] == pytest.approx(7.0)
    status, _, err = run_cli(
        capsys, "plan", "--case", "water", "--tpp", "lambda_Liver=2", "--out", tmp_path / "x", *FAST
    )
    assert status == 2 and "unknown TPP 'lambda_Liver'" in err and not (tmp_path / "x").exists()


def test_plan_with_an_agent_records_it_and_refuses_conflicting_choices(capsys, tmp_path):
    out = tmp_path / "agent"
    coarse = ["--bixel-mm", "10", "--dose-grid-mm", "8", "--agent-grid-mm", "10", "--quiet"]
    status, _, err = run_cli(
        capsys, "plan", "--case", "prostate", "--agent", "equispaced", "--beams", "5", "--out", out, *coarse
    )
    assert status == 0, err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["gantry_angles_deg"] == [0.0, 70.0, 140.0, 220.0, 290.0]  # the template snapped to 10°
    (agent,) = plan["agents"]
    assert agent["agent"] == "equispaced" and agent["angles_deg"] == plan["gantry_angles_deg"]
    assert agent["steps"] == 5 and agent["optimizer_calls"] == 5
    for extra, message in (
        (["--agent", "greedy"], "--agent equispaced and --agent greedy both choose the angles"),
        (["--angles", "0,90,180"], "--angles conflicts with --agent equispaced"),
        (["--agent", "dqn"], "unknown agent 'dqn'; known agents: random"),
    ):
        status, _, err = run_cli(
            capsys, "plan", "--case", "prostate", "--agent", "equispaced", *extra, "--out", tmp_path / "x"
        )
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    status, _, err = run_cli(
        capsys, "plan", "--case", "water", "--agent", "tuner", "--tpp", "t_PTV=1.1", "--out", tmp_path / "x"
    )
    assert status == 2 and "--tpp conflicts with --agent tuner" in err
    assert not (tmp_path / "x").exists()


def test_impossible_geometry_gives_one_line_and_writes_nothing(capsys, tmp_path, phantom_files):
    """A target outside or partly outside the body, and a sheared CT, are refused before planning."""
    ct, grid = read_volume(phantom_files / "ct.nrrd")
    ras = grid.voxel_centers_ras().reshape(*grid.shape, 3)
    body = (ras[..., 0] / 60.0) ** 2 + (ras[..., 1] / 45.0) ** 2 <= 1.0
    outside = np.linalg.norm(ras - [62.0, 48.0, 0.0], axis=-1) <= 8.0
    partly = np.linalg.norm(ras - [56.0, 0.0, 0.0], axis=-1) <= 10.0
    assert not np.any(outside & body) and np.any(partly & body) and np.any(partly & ~body)
    write_segmentation(tmp_path / "s.seg.nrrd", [("Body", body), ("Out", outside), ("Edge", partly)], grid)
    sheared = grid.ijk_to_ras.copy()
    sheared[0, 2] = 1.0  # slices shifted sideways, as a gantry-tilted scan
    write_volume(tmp_path / "sheared.nrrd", ct, Grid(grid.shape, sheared))
    cases = [
        (tmp_path / "ct.nrrd", "Out", "target 'Out' lies entirely outside the body 'Body'"),
        (tmp_path / "ct.nrrd", "Edge", "target 'Edge' lies partly outside the body 'Body'"),
        (tmp_path / "sheared.nrrd", "Out", "from perpendicular"),
    ]
    write_volume(tmp_path / "ct.nrrd", ct, grid)
    for ct_file, target, message in cases:
        out = tmp_path / "nested" / "out"
        arguments = ["--ct", ct_file, "--structures", tmp_path / "s.seg.nrrd", "--target", target]
        status, _, err = run_cli(capsys, "plan", *arguments, "--prescription", "60", "--out", out)
        assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert not (tmp_path / "nested").exists()


def test_two_dose_levels_and_warnings_from_the_command_line(capsys, tmp_path, phantom_files):
    _, grid = read_volume(phantom_files / "ct.nrrd")
    ras = grid.voxel_centers_ras().reshape(*grid.shape, 3)
    body = (ras[..., 0] / 60.0) ** 2 + (ras[..., 1] / 45.0) ** 2 <= 1.0
    ptv = np.linalg.norm(ras, axis=-1) <= 20.0
    boost = np.linalg.norm(ras, axis=-1) <= 9.0
    cord = np.linalg.norm(ras[..., :2] - [0.0, -18.0], axis=-1) <= 6.0  # touches the PTV
    write_segmentation(
        tmp_path / "s.seg.nrrd", [("Body", body), ("PTV", ptv), ("Boost", boost), ("Cord", cord)], grid
    )
    files = ["--ct", phantom_files / "ct.nrrd", "--structures", tmp_path / "s.seg.nrrd", "--oar", "Cord"]
    levels = ["--target", "PTV:50", "--target", "Boost:60"]
    out = tmp_path / "sib"
    status, _, err = run_cli(capsys, "plan", *files, *levels, "--out", out, *FAST)
    assert status == 0
    assert err.startswith("radagent: warning: organ at risk 'Cord' overlaps target 'PTV' by ")
    metrics = json.loads((out / "metrics.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    assert metrics["plan"]["prescription_gy"] == 60.0 and metrics["plan"]["primary_target"] == "Boost"
    assert [level["dose_level_gy"] for level in metrics["plan"]["target_levels"]] == [60.0, 50.0]
    assert metrics["structures"]["Boost"]["d95_gy"] == pytest.approx(60.0, rel=1e-3)
    assert plan["objective_set"] == "default" and plan["warnings"] and "objectives" in plan
    status, _, err = run_cli(
        capsys, "plan", *files, "--target", "PTV:65", "--prescription", "60", "--out", out
    )
    assert status == 2 and "prescribed 65 Gy, above the prescription 60 Gy" in err


def test_objective_set_normalization_and_notice_reach_plan_json(capsys, tmp_path):
    out = tmp_path / "p"
    status, _, err = run_cli(capsys, "plan", "--case", "water", "--objectives", "tpp", "--out", out, *FAST)
    plan = json.loads((out / "plan.json").read_text())
    assert status == 0 and plan["objective_set"] == "tpp" and plan["tpps"]["t_PTV"] == 1.0
    assert "not for clinical use" in plan["notice"]
    status, _, err = run_cli(capsys, "plan", "--case", "water", "--tpp", "t_PTV=1.05", "--out", out, *FAST)
    assert status == 0 and json.loads((out / "plan.json").read_text())["objective_set"] == "tpp"
    status, _, err = run_cli(capsys, "plan", "--case", "water", "--out", out, *FAST)
    assert json.loads((out / "plan.json").read_text())["objective_set"] == "default"
    status, _, err = run_cli(
        capsys,
        "plan",
        "--case",
        "water",
        "--objectives",
        "default",
        "--tpp",
        "t_PTV=1.05",
        "--out",
        tmp_path / "x",
    )
    assert status == 2 and "--tpp applies to the TPP objective set, not the default one" in err
    status, _, err = run_cli(
        capsys, "plan", "--case", "prostate", "--normalize-to", "Rectum", "--out", tmp_path / "x"
    )
    assert status == 2 and "normalized to a target only; 'Rectum' is not one" in err
    assert not (tmp_path / "x").exists()
