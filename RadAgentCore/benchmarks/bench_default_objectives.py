"""Plans without planning parameters: the default objective set against what the same command planned
before it (the TPP objective from the sources' untuned start), and TG-119 against pyRadPlan.

    .venv-bench/bin/python RadAgentCore/benchmarks/bench_default_objectives.py

Cases: the built-in prostate and prostate-4oar (7 equispaced beams) and matRad's TG119.mat C-shape with
the plain command of TG-119 (9 equispaced beams), all at the default grids (5 mm beamlets, 3 mm dose).
pyRadPlan (only in the ``bench`` environment) plans the same 9 beams with TG119.mat's own objectives and
its SVD pencil beam; both plans are compared at target D95 = 50 Gy. Two TG-119 plans with parameters set
explicitly show how far the core can be spared (TG-119's hard variant asks core D10 ≤ 10 Gy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "Testing" / "core"))


def plan_row(case: Any, dose_ct_gy: np.ndarray, seconds: float) -> dict[str, Any]:
    """Target D95/D10/D2, each OAR's mean (and D10/D50), dose outside the targets and R50, on the CT grid."""
    from radagent.evaluate.metrics import evaluate_plan

    evaluation = evaluate_plan(case, dose_ct_gy)
    target = evaluation.structures[case.primary_target.name]
    row: dict[str, Any] = {
        "target_d95_gy": target.d95_gy,
        "target_d10_gy": target.d10_gy,
        "target_d2_gy": target.d2_gy,
        "body_minus_targets_mean_gy": evaluation.body_minus_targets_mean_gy,
        "r50": evaluation.r50,
        "score": evaluation.score,
        "seconds": seconds,
    }
    for oar in case.oars:
        metrics = evaluation.structures[oar.name]
        row[oar.name] = {"mean_gy": metrics.mean_gy, "d10_gy": metrics.d10_gy, "d50_gy": metrics.d50_gy}
    return row


def our_plans(patient: Any, beams: int, **values: Any) -> dict[str, dict[str, Any]]:
    """The plan of the plain command with the default set and with the TPP objective's default start."""
    from radagent.request import PlanRequest, run_plan

    rows = {}
    for objective_set in ("tpp", "default"):
        start = time.perf_counter()
        planned = run_plan(PlanRequest(patient=patient, beams=beams, objective_set=objective_set, **values))
        rows[objective_set] = plan_row(
            planned.plan.case, planned.plan.dose_ct_gy, time.perf_counter() - start
        )
    return rows


def explicit_tg119_plans(tg119: Path) -> dict[str, dict[str, Any]]:
    """TG-119 with parameters set by hand: the README's TPP command, and explicit objectives pressing the
    core towards the hard variant (its max-DVH limit at 20 % of p), both at a 2.5 mm dose grid."""
    from bench_core import NORMAL_TISSUE, TG119_NINE_ANGLES, with_normal_tissue

    from radagent.dose import DoseEngineSettings, compute_dose_influence
    from radagent.io.matrad import read_matrad
    from radagent.optimize import MaxDvh, SquaredOverdose, SquaredUnderdose, optimize_fluence
    from radagent.plan import normalized_dose_on_ct
    from radagent.request import PatientInput, PlanRequest, run_plan

    rows = {}
    start = time.perf_counter()
    request = PlanRequest(
        patient=PatientInput(matrad=str(tg119)),
        angles_deg=TG119_NINE_ANGLES,
        dose_grid_mm=2.5,
        tpps={"t_Core": 0.4, "lambda_Core": 5.0},
    )
    planned = run_plan(request)
    rows["tpp t_Core=0.4 lambda_Core=5"] = plan_row(
        planned.plan.case, planned.plan.dose_ct_gy, time.perf_counter() - start
    )
    case = with_normal_tissue(read_matrad(tg119))
    target, core, p = case.primary_target.name, case.oars[0].name, case.prescription_gy
    influence = compute_dose_influence(case, TG119_NINE_ANGLES, DoseEngineSettings(dose_grid_mm=2.5))
    for core_level, core_weight in ((0.2, 1000.0), (0.15, 3000.0)):
        objectives = [
            SquaredUnderdose(target, p, 1000.0),
            SquaredOverdose(target, 1.05 * p, 300.0),
            MaxDvh(core, core_level * p, 0.10, core_weight),
            SquaredOverdose(core, 0.3 * p, 300.0),
            SquaredOverdose(NORMAL_TISSUE, 0.6 * p, 30.0),
        ]
        start = time.perf_counter()
        result = optimize_fluence(influence.matrix, influence.dose_grid, case, objectives=objectives)
        dose, _ = normalized_dose_on_ct(case, influence.dose_volume(result.weights), influence.dose_grid)
        label = f"objectives: core max-DVH 10 % ≤ {core_level:g} p"
        rows[label] = plan_row(read_matrad(tg119), dose, time.perf_counter() - start)
    return rows


def pyradplan_tg119(tg119: Path) -> dict[str, Any] | None:
    """pyRadPlan's 9-beam plan from TG119.mat's objectives at target D95 = 50 Gy; None without pyRadPlan."""
    try:
        import pyRadPlan  # noqa: F401
    except ImportError:
        return None
    from bench_core import TG119_NINE_ANGLES
    from pyradplan_reference import run_pyradplan_cshape

    from radagent.evaluate.dvh import hottest_minimum_gy
    from radagent.io.matrad import read_matrad

    case = read_matrad(tg119)
    start = time.perf_counter()
    run = run_pyradplan_cshape(tg119, TG119_NINE_ANGLES, 5.0, 3.0)
    dose = run["dose_ct_gy"]
    dose = dose * (50.0 / hottest_minimum_gy(dose[case.primary_target.mask], 0.95))
    return plan_row(case, dose, time.perf_counter() - start)


def print_rows(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    for label, row in rows.items():
        organs = ", ".join(
            f"{name} mean {value['mean_gy']:.1f} (D10 {value['d10_gy']:.1f}, D50 {value['d50_gy']:.1f})"
            for name, value in row.items()
            if isinstance(value, dict)
        )
        print(
            f"  {label:<40} D95 {row['target_d95_gy']:.2f}  D10 {row['target_d10_gy']:.2f}  "
            f"D2 {row['target_d2_gy']:.2f} Gy | {organs} | body−targets mean "
            f"{row['body_minus_targets_mean_gy']:.2f} Gy, R50 {row['r50']:.2f} | {row['seconds']:.1f} s"
        )


def main() -> None:
    from tg119_data import find_tg119_mat

    from radagent.request import PatientInput

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_default.json"))
    args = parser.parse_args()
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}
    for name in ("prostate", "prostate-4oar"):
        report[name] = our_plans(PatientInput(case=name), 7)
        print_rows(f"{name}, 7 beams (tpp: before the default set; default: now)", report[name])
    coarse = our_plans(PatientInput(case="prostate-4oar"), 7, dose_grid_mm=5.0)
    report["prostate-4oar at a 5 mm dose grid"] = coarse
    print_rows("prostate-4oar, 7 beams, the agents' 5 mm dose grid", coarse)
    tg119, where = find_tg119_mat()
    if tg119 is None:
        print(f"\nTG119.mat not found ({where}): TG-119 skipped")
    else:
        report["tg119"] = our_plans(PatientInput(matrad=str(tg119)), 9)
        reference = pyradplan_tg119(tg119)
        if reference is not None:
            report["tg119"]["pyRadPlan (TG119.mat objectives)"] = reference
        print_rows(
            "TG-119 C-shape, 9 beams, plain command (pyRadPlan rescaled to D95 = 50 Gy)", report["tg119"]
        )
        report["tg119_explicit"] = explicit_tg119_plans(tg119)
        print_rows(
            "TG-119 C-shape, 9 beams, 2.5 mm dose grid, parameters set by hand", report["tg119_explicit"]
        )
    from radagent.io.atomic import write_text_atomic  # the package's one atomic writer

    write_text_atomic(args.out, json.dumps(report, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
