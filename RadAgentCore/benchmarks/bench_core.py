"""Core benchmark: dose engine (cold and warm), forward dose and optimization, and pyRadPlan beside it.

One command prints a table and writes JSON::

    .venv/bin/python RadAgentCore/benchmarks/bench_core.py --out results/bench_core.json

It measures the prostate case (7 beams, 5 mm beamlets, 3 mm dose grid) and a TG-119 C-shape (5 beams,
5 mm / 5 mm; matRad's own TG119.mat when it can be found, else the built-in ``cshape``) in child
processes: the first child runs with an empty numba cache (cold: includes JIT compilation), the second
with the cache the first filled (warm). When pyRadPlan is importable (see ``pyradplan_reference.py``
for its environment), the same C-shape goes through pyRadPlan's photon pencil beam in the same run:
time ratios, a plan-quality comparison, the 3 %/3 mm gamma of the two optimized plans (plan vs plan)
and of the two engines given pyRadPlan's beamlets and fluence (engine agreement). Last, a
9-beam plan of TG-119's C-shape is checked against the TG-119 goals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PROSTATE_ANGLES = tuple(round(360.0 * n / 7, 4) for n in range(7))
CSHAPE_ANGLES = (0.0, 72.0, 144.0, 216.0, 288.0)
TG119_NINE_ANGLES = tuple(40.0 * n for n in range(9))
FORWARD_REPEATS = 20


def find_tg119(explicit: Path | None) -> Path | None:
    """TG119.mat from the command line, an installed pyRadPlan, or the test suite's download cache."""
    if explicit is not None:
        return explicit
    try:
        from importlib import resources

        candidate = Path(str(resources.files("pyRadPlan.data.phantoms").joinpath("TG119.mat")))
        if candidate.is_file():
            return candidate
    except (ImportError, ModuleNotFoundError):
        pass
    root = HERE.parents[1]
    cached = sorted(root.glob(".cache/**/TG119.mat"))
    env = os.environ.get("RADAGENT_TG119_MAT")
    if env and Path(env).is_file():
        return Path(env)
    return cached[0] if cached else None


def cshape_case(tg119: Path | None):
    """The C-shape case: TG-119's own phantom when available, else the built-in one."""
    if tg119 is not None:
        from radagent.io.matrad import read_matrad

        return read_matrad(tg119)
    from radagent.cases import load_case

    return load_case("cshape")


NORMAL_TISSUE = "NormalTissue"


def with_normal_tissue(case):
    """The case plus body minus targets and OARs (matRad's overlap rule), so the body objective
    does not fight the target's."""
    import dataclasses

    from radagent.patient import Role, Structure

    rest = case.body.mask & ~case.target_mask()
    for oar in case.oars:
        rest &= ~oar.mask
    return dataclasses.replace(case, structures=(*case.structures, Structure(NORMAL_TISSUE, Role.OAR, rest)))


def cshape_objectives(case) -> list:
    """TG119.mat's own objectives (as pyRadPlan plans them): target 50 Gy, core > 25 Gy, rest > 30 Gy."""
    from radagent.optimize import SquaredOverdose, SquaredUnderdose

    target, core, p = case.targets[0].name, case.oars[0].name, case.prescription_gy
    return [
        SquaredUnderdose(target, p, weight=1000.0),
        SquaredOverdose(target, p, weight=1000.0),
        SquaredOverdose(core, 0.5 * p, weight=300.0),
        SquaredOverdose(NORMAL_TISSUE, 0.6 * p, weight=100.0),
    ]


def tg119_goal_objectives(case) -> list:
    """Objectives for the 9-beam TG-119 plan: coverage, a hot-spot limit and a core held below 25 Gy."""
    from radagent.optimize import MaxDvh, SquaredOverdose, SquaredUnderdose

    target, core, p = case.targets[0].name, case.oars[0].name, case.prescription_gy
    return [
        SquaredUnderdose(target, p, weight=1000.0),
        SquaredOverdose(target, 1.05 * p, weight=300.0),
        MaxDvh(core, 0.4 * p, volume_fraction=0.10, weight=300.0),
        SquaredOverdose(core, 0.5 * p, weight=100.0),
        SquaredOverdose(NORMAL_TISSUE, 0.6 * p, weight=30.0),
    ]


def measure_case(case, angles, bixel_mm: float, dose_grid_mm: float, objectives=None) -> dict[str, Any]:
    """Time the dose engine, the forward dose and the optimization for one plan; evaluate it."""
    from radagent.dose import DoseEngineSettings, compute_dose_influence
    from radagent.evaluate.metrics import evaluate_plan
    from radagent.optimize import OptimizerSettings, TPPs, optimize_fluence, tpp_oar_names
    from radagent.plan import normalized_dose_on_ct

    settings = DoseEngineSettings(bixel_mm=bixel_mm, dose_grid_mm=dose_grid_mm)
    start = time.perf_counter()
    influence = compute_dose_influence(case, angles, settings)
    engine_s = time.perf_counter() - start

    weights = np.ones(influence.matrix.shape[1])
    influence.dose(weights)
    forward = []
    for _ in range(FORWARD_REPEATS):
        start = time.perf_counter()
        influence.dose(weights)
        forward.append(time.perf_counter() - start)

    start = time.perf_counter()
    if objectives is None:
        result = optimize_fluence(
            influence.matrix,
            influence.dose_grid,
            case,
            tpps=TPPs.default(tpp_oar_names(case)),
            settings=OptimizerSettings(),
        )
    else:
        result = optimize_fluence(influence.matrix, influence.dose_grid, case, objectives=objectives)
    optimization_s = time.perf_counter() - start
    dose_ct, _ = normalized_dose_on_ct(case, influence.dose_volume(result.weights), influence.dose_grid)
    evaluation = evaluate_plan(case, dose_ct).to_dict()
    target, oar = case.targets[0].name, case.oars[0].name
    return {
        "case": case.name,
        "beams": len(angles),
        "bixel_mm": bixel_mm,
        "dose_grid_mm": dose_grid_mm,
        "n_beamlets": int(influence.matrix.shape[1]),
        "dose_voxels": int(influence.dose_grid.size),
        "nnz": int(influence.nnz),
        "megabytes": float(influence.megabytes),
        "dose_engine_s": engine_s,
        "forward_dose_ms": 1000.0 * float(np.median(forward)),
        "optimization_s": optimization_s,
        "outer_iterations": int(result.outer_iterations),
        "inner_iterations": int(result.inner_iterations),
        "target_d95_gy": evaluation["structures"][target]["d95_gy"],
        "target_d10_gy": evaluation["structures"][target]["d10_gy"],
        "target_d2_gy": evaluation["structures"][target]["d2_gy"],
        "oar_d10_gy": evaluation["structures"][oar]["d10_gy"],
        "score": evaluation["plan"]["score"],
        "score_max": evaluation["plan"]["score_max"],
        "reward": evaluation["plan"]["reward"],
        "_dose_ct_gy": dose_ct,
    }


def child(args: argparse.Namespace) -> None:
    """Run inside a fresh process: prostate then C-shape; print one JSON line."""
    from radagent.cases import load_case

    import_start = time.perf_counter()
    import radagent.dose  # noqa: F401 - import time is part of what a user waits for

    results = {"import_s": time.perf_counter() - import_start}
    prostate = measure_case(load_case("prostate"), PROSTATE_ANGLES, 5.0, 3.0)
    cshape = with_normal_tissue(cshape_case(args.tg119))
    cshape_run = measure_case(cshape, CSHAPE_ANGLES, 5.0, 5.0, objectives=cshape_objectives(cshape))
    if args.save_dose is not None:
        np.save(args.save_dose, cshape_run["_dose_ct_gy"].astype(np.float32))
    for run in (prostate, cshape_run):
        run.pop("_dose_ct_gy")
    results.update(prostate=prostate, cshape=cshape_run)
    print("BENCH-JSON " + json.dumps(results))


def run_child(numba_cache: str, tg119: Path | None, save_dose: Path | None) -> dict[str, Any]:
    """Start a child process with the given numba cache folder and collect its JSON line."""
    command = [sys.executable, __file__, "--child"]
    if tg119 is not None:
        command += ["--tg119", str(tg119)]
    if save_dose is not None:
        command += ["--save-dose", str(save_dose)]
    environment = dict(os.environ, NUMBA_CACHE_DIR=numba_cache)
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("BENCH-JSON "))
    result = json.loads(line.removeprefix("BENCH-JSON "))
    result["process_s"] = time.perf_counter() - start
    return result


def pyradplan_comparison(
    tg119: Path, radagent_dose_path: Path, radagent_run: dict[str, Any]
) -> dict[str, Any]:
    """Plan the same C-shape with pyRadPlan; compare time, plan quality (both at D95 = 50 Gy), the gamma
    of the two optimized plans (plan vs plan) and the engines' gamma with the same fluence."""
    sys.path.insert(0, str(HERE))
    from pyradplan_reference import ARRAY_KEYS, compare_doses, engine_agreement, run_pyradplan_cshape

    from radagent.evaluate.metrics import evaluate_plan
    from radagent.io.matrad import read_matrad

    case = read_matrad(tg119)
    reference = run_pyradplan_cshape(tg119, CSHAPE_ANGLES, 5.0, 5.0, with_dij=True)
    ours = np.load(radagent_dose_path).astype(np.float64)
    target, core = case.targets[0].name, case.oars[0].name
    quality = {}
    for label, dose in (("radagent", ours), ("pyradplan", reference["dose_ct_gy"])):
        d95 = evaluate_plan(case, dose).to_dict()["structures"][target]["d95_gy"]
        normalized = evaluate_plan(case, dose * (50.0 / d95)).to_dict()["structures"]
        quality[label] = {
            "target_d95_gy": normalized[target]["d95_gy"],
            "target_d10_gy": normalized[target]["d10_gy"],
            "core_d10_gy": normalized[core]["d10_gy"],
        }
    return {
        "pyradplan": {key: value for key, value in reference.items() if key not in ARRAY_KEYS},
        "dose_engine_speedup": reference["time_dij_s"] / radagent_run["dose_engine_s"],
        "optimization_speedup": reference["time_opt_s"] / radagent_run["optimization_s"],
        "plan_quality_at_d95_50gy": quality,
        "gamma_plan_vs_plan": compare_doses(case, reference["dose_ct_gy"], ours),
        "engine_agreement": engine_agreement(tg119, CSHAPE_ANGLES, 5.0, 5.0, run=reference),
    }


def tg119_nine_beam_plan(tg119: Path | None) -> dict[str, Any]:
    """Plan TG-119's C-shape with 9 beams and check the TG-119 goals (D95 ≥ 50, D10 ≤ 55, core D10 ≤ 25)."""
    case = with_normal_tissue(cshape_case(tg119))
    run = measure_case(case, TG119_NINE_ANGLES, 5.0, 2.5, objectives=tg119_goal_objectives(case))
    run.pop("_dose_ct_gy")
    run["goals_met"] = {
        "target_d95_ge_50": run["target_d95_gy"] >= 50.0 - 1e-6,
        "target_d10_le_55": run["target_d10_gy"] <= 55.0,
        "core_d10_le_25": run["oar_d10_gy"] <= 25.0,
    }
    return run


def print_table(report: dict[str, Any]) -> None:
    """The human-readable summary."""
    from radagent.evaluate.metrics import score_text

    rows = [
        ("prostate, 7 beams, 5 mm / 3 mm", "prostate"),
        ("C-shape, 5 beams, 5 mm / 5 mm", "cshape"),
    ]
    header = (
        f"{'case':<34}{'run':<6}{'engine s':>9}{'fwd ms':>8}{'opt s':>7}{'steps':>7}"
        f"{'beamlets':>9}{'nnz M':>8}{'MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, key in rows:
        for run_name in ("cold", "warm"):
            run = report[run_name][key]
            print(
                f"{label:<34}{run_name:<6}{run['dose_engine_s']:>9.2f}{run['forward_dose_ms']:>8.1f}"
                f"{run['optimization_s']:>7.2f}{run['inner_iterations']:>7d}{run['n_beamlets']:>9d}"
                f"{run['nnz'] / 1e6:>8.2f}{run['megabytes']:>8.1f}"
            )
    warm = report["warm"]
    print(f"\nprocess wall time: cold {report['cold']['process_s']:.1f} s, warm {warm['process_s']:.1f} s")
    p = warm["prostate"]
    print(
        f"prostate plan: PTV D95 {p['target_d95_gy']:.1f} Gy, D2 {p['target_d2_gy']:.1f} Gy, "
        f"{score_text(p['score'], p['score_max'])}"
    )
    comparison = report.get("pyradplan_comparison")
    if comparison:
        reference = comparison["pyradplan"]
        print(
            f"\npyRadPlan C-shape: dij {reference['time_dij_s']:.2f} s, "
            f"optimization {reference['time_opt_s']:.2f} s ({reference['iterations']} iterations, "
            f"{reference['n_beamlets']} beamlets, {reference['nnz'] / 1e6:.2f} M nnz)"
        )
        print(
            f"speed-up radagent vs pyRadPlan: dose engine ×{comparison['dose_engine_speedup']:.1f}, "
            f"optimization ×{comparison['optimization_speedup']:.1f}"
        )
        for name, quality in comparison["plan_quality_at_d95_50gy"].items():
            print(
                f"  {name:<10} at D95 = 50 Gy: target D10 {quality['target_d10_gy']:.2f} Gy, "
                f"core D10 {quality['core_d10_gy']:.2f} Gy"
            )
        gamma = comparison["gamma_plan_vs_plan"]
        print(
            f"plan vs plan (each engine + its optimizer), gamma {gamma['criteria']}: "
            f"{gamma['gamma_pass_rate_percent']:.1f} % pass ({gamma['gamma_points']} points)"
        )
        agreement = comparison["engine_agreement"]
        same = agreement["gamma_same_fluence"]
        print(
            f"engine agreement, same fluence ({agreement['n_beamlets']} pyRadPlan beamlets and weights): "
            f"{same['gamma_pass_rate_percent']:.1f} % gamma 3 %/3 mm "
            f"({agreement['gamma_same_fluence_2pct_2mm']:.1f} % at 2 %/2 mm; "
            f"uniform weights {agreement['gamma_same_beamlets_uniform_weights']:.1f} %)"
        )
        bands = ", ".join(
            f"{band} {entry['pass_percent']:.1f}" for band, entry in same["pass_by_dose_band"].items()
        )
        print(f"  pass % by dose band: {bands}")
    else:
        print("\npyRadPlan not installed: comparison skipped (see pyradplan_reference.py)")
    nine = report["tg119_nine_beams"]
    goals = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in nine["goals_met"].items())
    print(
        f"\n{nine['case']} 9 beams: target D95 {nine['target_d95_gy']:.2f} Gy, "
        f"D10 {nine['target_d10_gy']:.2f} Gy, core D10 {nine['oar_d10_gy']:.2f} Gy → {goals}"
    )


def main() -> None:
    """Parent process: cold and warm children, the pyRadPlan comparison, the 9-beam TG-119 check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_core.json"))
    parser.add_argument("--tg119", type=Path, help="matRad's TG119.mat (default: found automatically)")
    parser.add_argument("--skip-pyradplan", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-dose", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    tg119 = find_tg119(args.tg119)
    report: dict[str, Any] = {"tg119_mat": str(tg119) if tg119 else None, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as numba_cache, tempfile.TemporaryDirectory() as scratch:
        dose_path = Path(scratch) / "radagent_cshape_dose.npy"
        report["cold"] = run_child(numba_cache, tg119, None)
        report["warm"] = run_child(numba_cache, tg119, dose_path)
        try:
            import pyRadPlan  # noqa: F401

            has_pyradplan = not args.skip_pyradplan and tg119 is not None
        except ImportError:
            has_pyradplan = False
        if has_pyradplan:
            report["pyradplan_comparison"] = pyradplan_comparison(tg119, dose_path, report["warm"]["cshape"])
    report["tg119_nine_beams"] = tg119_nine_beam_plan(tg119)
    print_table(report)
    from radagent.io.atomic import write_text_atomic  # the package's one atomic writer

    write_text_atomic(args.out, json.dumps(report, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
