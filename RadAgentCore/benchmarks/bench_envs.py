"""Environment benchmark: gantry precompute and step times, TPP step times, default-start scores.

    .venv/bin/python RadAgentCore/benchmarks/bench_envs.py --out results/bench_envs.json

Prostate, 5 mm agent grid, default configurations. Actions are drawn uniformly among the valid ones
(seeded), so the numbers are for ordinary episodes, not best or worst cases. The random-start TPP
steps are measured three more times: with one numba thread (``threads=1``), and with and without it
while a busy-loop process keeps one core occupied (what a parallel rollout or another job does to a
step: every parallel region waits for its slowest thread). The default-start scores of held-out
variants say whether the TPP task is a real one (the sources start at 6.2 ± 1.8 of 9).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from radagent.envs import GantryEnv, TPPEnv
from radagent.envs.tpp import TPPConfig
from radagent.io.atomic import write_text_atomic


def timed_episodes(env, episodes: int, rng: np.random.Generator) -> list[float]:
    """Step times (s) of ``episodes`` episodes with uniformly drawn valid actions."""
    times = []
    for episode in range(episodes):
        env.reset(seed=episode)
        done = False
        while not done:
            action = int(rng.choice(np.flatnonzero(env.action_masks())))
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            times.append(time.perf_counter() - start)
            done = terminated or truncated
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Median, 90th percentile and maximum in milliseconds."""
    values = 1000.0 * np.asarray(times)
    return {
        "steps": len(times),
        "median_ms": float(np.median(values)),
        "p90_ms": float(np.percentile(values, 90)),
        "max_ms": float(values.max()),
    }


def main() -> None:
    """Run the measurements, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_envs.json"))
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--held-out", default="30-39", help="variants whose default-start score is reported")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}

    start = time.perf_counter()
    gantry = GantryEnv(case="prostate")  # the constructor precomputes every candidate beam of the case
    gantry.reset(seed=0)
    report["gantry_precompute_s"] = time.perf_counter() - start
    report["gantry_sequential_step"] = summary(timed_episodes(gantry, args.episodes, rng))
    gantry.close()

    runs = [("default", None, False), ("random", None, False), ("random", 1, False)]
    runs += [("random", None, True), ("random", 1, True)]
    for start_mode, threads, loaded in runs:
        tpp = TPPEnv(case="prostate", config=TPPConfig(start=start_mode, threads=threads))
        key = f"tpp_step_{start_mode}_start" + ("_1_thread" if threads == 1 else "")
        key += "_busy_core" if loaded else ""
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
        try:
            # the same seeded episodes and actions in every run, so the runs differ only in threads and load
            report[key] = summary(timed_episodes(tpp, args.episodes, np.random.default_rng(1)))
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        tpp.close()

    first, last = (int(v) for v in args.held_out.split("-"))
    scores = []
    for variant in range(first, last + 1):
        env = TPPEnv(case="prostate", variants=[variant])
        _, info = env.reset(seed=0)
        scores.append(float(info["score"]))
        env.close()
    report["default_start_scores"] = {"variants": args.held_out, "scores": scores}

    print(
        f"gantry precompute (36 angles: construction and first reset): {report['gantry_precompute_s']:.1f} s"
    )
    for key in [k for k in report if k.endswith("step") or "_step_" in k]:
        s = report[key]
        print(
            f"{key:<42} median {s['median_ms']:6.0f} ms  p90 {s['p90_ms']:6.0f} ms  "
            f"max {s['max_ms']:6.0f} ms  ({s['steps']} steps)"
        )
    print(
        f"default-start score, variants {args.held_out}: {np.mean(scores):.2f} "
        f"± {np.std(scores, ddof=1):.2f} of 9 ({', '.join(f'{s:.1f}' for s in scores)})"
    )
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
