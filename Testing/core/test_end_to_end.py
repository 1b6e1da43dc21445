"""End-to-end runs of the installed `radagent` command, as a new user types them (slow: full resolution)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tg119_data import find_tg119_mat

from radagent.io.nrrd import read_volume

pytestmark = pytest.mark.slow

TG119_NINE_BEAMS = "0,40,80,120,160,200,240,280,320"


def radagent(*args, check=True) -> subprocess.CompletedProcess:
    """Run the console script installed next to this Python."""
    script = Path(sys.executable).with_name("radagent")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "radagent.cli"]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, check=False)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def tg119():
    path, reason = find_tg119_mat()
    if path is None:
        pytest.skip(reason)
    return path


def test_readme_main_job_plans_the_bundled_prostate(tmp_path):
    out = tmp_path / "prostate"
    result = radagent("plan", "--case", "prostate", "--out", out)
    assert "prostate: 7 beams" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    ptv = metrics["structures"]["PTV"]
    assert ptv["d95_gy"] == pytest.approx(79.2, rel=1e-4)
    assert 79.2 < ptv["d2_gy"] < 1.07 * 79.2  # a homogeneous target
    assert 0 <= metrics["plan"]["score"] <= metrics["plan"]["score_max"] == 9
    assert metrics["plan"]["reward"] < 0
    assert metrics["dij"]["nnz"] > 1_000_000
    dose, _ = read_volume(out / "dose.nrrd")
    assert dose.max() == pytest.approx(metrics["structures"]["Body"]["max_gy"], rel=1e-3)
    assert (out / "report.png").stat().st_size > 50_000


def test_tg119_c_shape_meets_the_tg119_goals_with_nine_beams(tmp_path, tg119):
    """TG-119's C-shape (matRad's phantom): D95 ≥ 50 Gy, D10 ≤ 55 Gy, core D10 ≤ 25 Gy."""
    out = tmp_path / "tg119"
    radagent(
        "plan",
        "--matrad",
        tg119,
        "--angles",
        TG119_NINE_BEAMS,
        "--dose-grid-mm",
        "2.5",
        "--fractions",
        "25",
        "--tpp",
        "t_Core=0.4",
        "--tpp",
        "lambda_Core=5",
        "--out",
        out,
        "--quiet",
    )
    structures = json.loads((out / "metrics.json").read_text())["structures"]
    assert structures["OuterTarget"]["d95_gy"] >= 50.0 - 1e-3
    assert structures["OuterTarget"]["d10_gy"] <= 55.0
    assert structures["Core"]["d10_gy"] <= 25.0


def test_evaluate_reproduces_the_plan_metrics_for_a_built_in_case(tmp_path):
    plan_out, evaluate_out = tmp_path / "plan", tmp_path / "evaluate"
    radagent("plan", "--case", "liver", "--beams", "5", "--out", plan_out, "--quiet")
    radagent(
        "evaluate", "--case", "liver", "--dose", plan_out / "dose.nrrd", "--out", evaluate_out, "--quiet"
    )
    planned = json.loads((plan_out / "metrics.json").read_text())
    evaluated = json.loads((evaluate_out / "metrics.json").read_text())
    assert evaluated["plan"]["score"] == pytest.approx(planned["plan"]["score"], abs=1e-4)
    for name, values in planned["structures"].items():
        np.testing.assert_allclose(
            [evaluated["structures"][name][key] for key in ("mean_gy", "d95_gy", "d2_gy")],
            [values[key] for key in ("mean_gy", "d95_gy", "d2_gy")],
            rtol=1e-4,
            atol=1e-3,
        )


def test_a_bad_input_from_the_shell_is_one_line_without_traceback(tmp_path):
    result = radagent(
        "plan", "--case", "prostate", "--angles", "0,90,400", "--out", tmp_path / "x", check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "out of range" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()
