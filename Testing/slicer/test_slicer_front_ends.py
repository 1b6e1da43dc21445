"""One way in: the CLI, batch mode and the Slicer logic parse the same choices into the core's plan request
and write the same plan.json and metrics.json; an agent added to the registry appears in all three."""

from __future__ import annotations

import json
import math

import pytest
from conftest import OARS
from RadAgentSlicerLib import batch
from RadAgentSlicerLib.logic import PlanningLogic
from test_slicer_batch import _write_case

from radagent.agents import AgentSpec, AngleAgentOptions
from radagent.agents import registry as agent_registry
from radagent.agents.baselines import run_equispaced
from radagent.cli import main as cli_main

ROLES = ["--target", "PTV", *[a for oar in OARS for a in ("--oar", oar)], "--fractions", "39"]
CHOICES = ["--scorecard", "prostate", "--agent", "equispaced", "--beams", "5", "--dose-grid-mm", "5"]


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("timing_s", "wall_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _same(a, b, rel: float, path: str = "") -> list[str]:
    """Where two JSON values differ: in structure, in text or integers, or in floats beyond ``rel``."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for key in a for d in _same(a[key], b[key], rel, f"{path}/{key}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _same(x, y, rel, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=rel, abs_tol=rel) else [f"{path}: {a} != {b}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def _three_front_ends(case, tmp_path, oblique_deg: float) -> list[dict[str, dict]]:
    """plan.json and metrics.json of the CLI, batch mode and the Slicer logic, planning the same files."""
    ct, segmentation = _write_case(tmp_path / "in", case, oblique_deg=oblique_deg, own_grid=False)
    files = ["--ct", str(ct), "--structures", str(segmentation)]
    rx = ["--prescription", f"{case.prescription_gy:g}"]
    assert cli_main(["plan", *files, *ROLES, *rx, *CHOICES, "--quiet", "--out", str(tmp_path / "cli")]) == 0
    files[2] = "--segmentation"
    assert batch.main([*files, *ROLES, *rx, *CHOICES, "--out", str(tmp_path / "batch")]) == 0
    scene = batch.new_scene(tmp_path / "cache")
    ct_node, segmentation_node = batch.load_inputs(scene, ct, segmentation)
    result = PlanningLogic(scene).plan(
        ct_node,
        segmentation_node,
        ["PTV"],
        OARS,
        case.prescription_gy,
        39,
        "equispaced",
        5,
        scorecard="prostate",
        doseGridMm=5.0,
    )
    scene.Clear(1)
    outputs = [
        {name: json.loads((tmp_path / front / name).read_text()) for name in ("plan.json", "metrics.json")}
        for front in ("cli", "batch")
    ]
    outputs.append(json.loads(json.dumps({"plan.json": result.description, "metrics.json": result.metrics})))
    return [_without_timings(output) for output in outputs]


def test_cli_batch_and_slicer_logic_write_identical_plans(prostate, tmp_path):
    cli, batch_mode, logic = _three_front_ends(prostate, tmp_path, oblique_deg=0.0)
    assert cli["plan.json"]["agents"][0]["agent"] == "equispaced"
    assert cli == batch_mode == logic  # every number, bit for bit (wall-clock times aside)


@pytest.mark.slow
def test_on_an_oblique_ct_the_front_ends_agree_to_rounding(prostate, tmp_path):
    """MRML and the core derive an oblique CT's IJK→RAS from the same NRRD 1 ulp apart (VTK composes
    spacing and direction in another order); that moves the numbers by ~1e-9 relative, no more."""
    cli, batch_mode, logic = _three_front_ends(prostate, tmp_path, oblique_deg=15.0)
    assert _same(cli, batch_mode, rel=1e-6) == []
    assert _same(cli, logic, rel=1e-6) == []


def test_an_agent_added_to_the_registry_appears_in_every_front_end(prostate, tmp_path, monkeypatch, capsys):
    throwaway = AgentSpec("throwaway-test", "angles", AngleAgentOptions, run_equispaced, "a test's own agent")
    monkeypatch.setattr(agent_registry, "AGENTS", {**agent_registry.AGENTS, throwaway.name: throwaway})
    assert cli_main(["plan", "--help"]) == 0
    assert "throwaway-test(angles)" in "".join(capsys.readouterr().out.split())  # help wraps, even at "-"
    assert "throwaway-test(angles)" in "".join(batch._parser().format_help().split())
    assert ("throwaway-test", "a test's own agent") in PlanningLogic.agentChoices("angles")
    assert "throwaway-test" not in [name for name, _ in PlanningLogic.agentChoices("tpp")]
    ct, segmentation = _write_case(tmp_path / "in", prostate, oblique_deg=0.0, own_grid=False)
    arguments = ["--ct", str(ct), "--segmentation", str(segmentation), *ROLES, "--prescription", "78"]
    coarse = ["--agent", "throwaway-test", "--beams", "3", "--dose-grid-mm", "8", "--agent-grid-mm", "10"]
    assert batch.main([*arguments, *coarse, "--out", str(tmp_path / "out")]) == 0
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert [a["agent"] for a in plan["agents"]] == ["throwaway-test"]
