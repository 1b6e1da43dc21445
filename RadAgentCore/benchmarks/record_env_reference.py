"""Record what the environments compute, so a change to their hot path can be checked against it.

    .venv/bin/python RadAgentCore/benchmarks/record_env_reference.py Testing/core/data/env_reference.json

Prostate variant 0 on the 5 mm agent grid: 50 seeded 7-beam sets of the gantry environment's 36
candidates (default TPP objective) and 50 of the sources' random TPP vectors on 7 equispaced beams.
For each plan, the optimizer's final objective value and the CT-grid reward. It calls the
optimization and evaluation functions directly (not the environments), so it runs on the code before
and after a change; Testing/core/test_env_reference.py compares the environments with the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from radagent.beams import equispaced_angles
from radagent.cases import load_case
from radagent.dose import DoseEngineSettings, DoseInfluenceCache
from radagent.envs.common import evaluate_on_ct
from radagent.evaluate import RewardWeights
from radagent.optimize import StructureInfluence, TPPs, optimize_fluence, tpp_oar_names

PLANS = 50


def _plan(case, cache, angles, tpps):
    influence = cache.get(case, angles, DoseEngineSettings(bixel_mm=5.0, dose_grid_mm=5.0))
    oars = tpp_oar_names(case)
    rows = StructureInfluence.build(
        influence.matrix, influence.dose_grid, case, [case.primary_target.name, *oars]
    )
    result = optimize_fluence(rows, influence.dose_grid, case, tpps=tpps)
    plan = evaluate_on_ct(case, result.dose_gy, influence.dose_grid, RewardWeights())
    return {"objective": float(result.objective_history[-1]), "reward": float(plan.reward)}


def main() -> None:
    """Plan the reference sets and write them as JSON."""
    out = Path(sys.argv[1])
    case = load_case("prostate", 0)
    cache = DoseInfluenceCache()
    rng = np.random.default_rng(2026)
    candidates = [10.0 * n for n in range(36)]
    gantry = []
    for _ in range(PLANS):
        angles = sorted(float(a) for a in rng.choice(candidates, size=7, replace=False))
        gantry.append({"angles_deg": angles, **_plan(case, cache, angles, None)})
    tpp = []
    oars = tpp_oar_names(case)
    for _ in range(PLANS):
        tpps = TPPs.random(oars, rng)
        tpp.append({"tpps": list(tpps.values), **_plan(case, cache, list(equispaced_angles(7)), tpps)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"case": "prostate", "variant": 0, "gantry": gantry, "tpp": tpp}, indent=1))
    print(f"{len(gantry)} angle sets, {len(tpp)} TPP vectors → {out}")


if __name__ == "__main__":
    main()
