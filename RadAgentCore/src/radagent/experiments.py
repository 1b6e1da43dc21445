"""Agent experiments: training environments, agent comparisons over case variants, learning curves.

What ``radagent train`` and ``radagent compare`` do, as functions (torch-free: a DQN agent imports
torch only when it runs). A comparison runs each agent once per variant, on that variant alone, and
reports every number from the environment's CT-grid evaluation of the final plan.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from radagent import RESEARCH_USE_ONLY
from radagent.agents import AgentResult, get_agent
from radagent.agents.knowledge import StartSpec
from radagent.agents.pipeline import AgentRun, case_problems
from radagent.cases import load_case
from radagent.envs import GantryConfig, GantryEnv, TPPConfig, TPPEnv
from radagent.envs.common import AGENT_GRID_MM, agent_engine
from radagent.errors import InputError
from radagent.progress import ProgressCallback, report, scaled

__all__ = [
    "AgentChoice",
    "Run",
    "comparison_rows",
    "make_env",
    "parse_agents",
    "parse_variants",
    "plot_learning_curves",
    "plot_scores_by_step",
    "run_comparison",
    "summarize",
    "write_comparison",
]

EnvName = Literal["gantry", "tpp"]
_KIND = {"gantry": "angles", "tpp": "tpp"}


def parse_variants(text: str) -> tuple[int, ...]:
    """``"0-29"``, ``"30,32,35-39"`` → the variant numbers, in order, without repeats."""
    variants: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise InputError(f"variants must look like 0-29 or 30,32,35-39; got {text!r}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise InputError(f"variant range {part.strip()!r} runs backwards")
        variants += [v for v in range(low, high + 1) if v not in variants]
    return tuple(variants)


def make_env(
    env: EnvName,
    case: str,
    variants: Sequence[int],
    *,
    grid_mm: float = AGENT_GRID_MM,
    start: Literal["default", "random"] = "default",
    include_tpps: bool = False,
    log_path: str | Path | None = None,
) -> GantryEnv | TPPEnv:
    """A training environment drawing ``variants`` of a built-in case, keeping every variant's
    precomputed dose in memory (gantry: ~190 MB per variant at 5 mm)."""
    engine = agent_engine(grid_mm)
    if env == "gantry":
        config = GantryConfig(engine=engine, log_path=log_path, cache_megabytes=250.0 * len(variants))
        return GantryEnv(case, variants, config)
    if env == "tpp":
        config = TPPConfig(
            engine=engine,
            start=start,
            include_tpps=include_tpps,
            log_path=log_path,
            cached_variants=len(variants),
        )
        return TPPEnv(case, variants, config)
    raise InputError(f"environment must be 'gantry' or 'tpp', got {env!r}")


@dataclass(frozen=True)
class AgentChoice:
    """An agent to compare: a registry name, for a DQN agent an optional checkpoint folder, and option
    values (an LLM agent's endpoint)."""

    name: str
    checkpoint: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name, with the checkpoint folder's name when one was given."""
        return self.name if self.checkpoint is None else f"{self.name}:{Path(self.checkpoint).name}"


def parse_agents(text: str, env: EnvName, llm_options: Mapping[str, Any] | None = None) -> list[AgentChoice]:
    """``"random,equispaced,dqn-gantry:runs/g1"`` → agent choices, each checked to act on ``env``; the agents
    that need an LLM endpoint get ``llm_options``."""
    choices = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise InputError(f"empty agent name in {text!r}")
        name, _, checkpoint = item.partition(":")
        spec = get_agent(name)
        if spec.kind != _KIND[env]:
            raise InputError(f"agent {name!r} chooses {spec.kind}, not what the {env} environment asks for")
        if checkpoint and spec.needs.trained is None:
            raise InputError(f"agent {name!r} takes no checkpoint")
        if checkpoint and not Path(checkpoint).is_dir():
            raise InputError(f"checkpoint folder {checkpoint} does not exist")
        options = dict(llm_options or {}) if spec.needs.llm_endpoint else {}
        choices.append(AgentChoice(name, checkpoint or None, options))
    if len({c.label for c in choices}) != len(choices):
        raise InputError(f"an agent is listed twice in {text!r}")
    return choices


@dataclass(frozen=True)
class Run:
    """One agent run of a comparison: the agent, the variant, where tuning started and the result."""

    choice: AgentChoice
    variant: int
    start: str  # "default", "random:i" (the i-th random start, 1-based) or "own" (the agent's own)
    result: AgentResult


def run_comparison(
    agents: Sequence[AgentChoice],
    case: str,
    variants: Sequence[int],
    *,
    grid_mm: float = AGENT_GRID_MM,
    starts: Sequence[StartSpec] = (StartSpec("default"),),
    seed: int = 0,
    agent_options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> list[Run]:
    """Run every agent on every variant from every start (TPP agents; angle agents run once per
    variant). Seeds: ``seed + variant`` from the default start, ``seed + 1000·i + variant`` from the i-th
    random start, so that every agent starts from the same random TPPs. ``agent_options`` (e.g.
    ``max_optimizations``, ``knowledge``) go to the agents whose options have those fields."""
    engine = agent_engine(grid_mm)
    if variants:  # refuse what cannot run before hours of the others (a trained agent on another site)
        first = load_case(case, variants[0])
        problems = [p for choice in agents for p in case_problems(_agent_run(choice), first)]
        if problems:
            raise InputError("; ".join(problems))
    plans = []
    for choice in agents:
        spec = get_agent(choice.name)
        for variant in variants:
            if spec.kind != "tpp" or not spec.options_type.uses_start:  # one run: its own start
                label = "default" if spec.kind != "tpp" else "own"
                plans.append((choice, spec, variant, label, "default", seed + variant))
                continue
            for start in starts:
                for index in range(1, start.count + 1):
                    if start.kind == "default":
                        plans.append((choice, spec, variant, "default", "default", seed + variant))
                    else:
                        run_seed = seed + 1000 * index + variant
                        plans.append((choice, spec, variant, f"random:{index}", "random", run_seed))
    results = []
    for done, (choice, spec, variant, label, kind, run_seed) in enumerate(plans):
        report(progress, done / len(plans), f"{choice.label} on variant {variant} ({label} start)")
        options = spec.options_type(seed=run_seed, engine=engine)
        if spec.kind == "tpp":
            options = replace(options, start=kind)
        if choice.checkpoint is not None:
            options = replace(options, checkpoint=choice.checkpoint)
        names = {f.name for f in fields(options)}
        extra = {k: v for k, v in (agent_options or {}).items() if k in names and v is not None}
        if extra:
            options = replace(options, **extra)
        if choice.options:
            options = replace(options, **_per_run(choice.options, f"{choice.label}.{label}", variant))
        sub = scaled(progress, done / len(plans), (done + 1) / len(plans))
        results.append(Run(choice, variant, label, spec.run(load_case(case, variant), options, sub)))
    report(progress, 1.0, "comparison done")
    return results


def _agent_run(choice: AgentChoice) -> AgentRun:
    """The choice as the pipeline's agent run, its checkpoint among its options."""
    checkpoint = {"checkpoint": choice.checkpoint} if choice.checkpoint is not None else {}
    return AgentRun(choice.name, {**choice.options, **checkpoint})


def _per_run(options: Mapping[str, Any], label: str, variant: int) -> dict[str, Any]:
    """An LLM agent's options for one run: its audit log in a file of its own (``log.<agent>.v<N>.jsonl``)
    so that each run can be replayed, and a replay or dry run reading or writing that run's own files."""
    values = dict(options)
    tag = f"{label.replace(':', '_')}.v{variant}"
    for key in ("llm_log", "llm_replay"):
        if values.get(key):
            path = Path(values[key])
            values[key] = str(path.with_name(f"{path.stem}.{tag}{path.suffix}"))
    if values.get("llm_dry_run"):
        values["llm_dry_run"] = str(Path(values["llm_dry_run"]) / tag)
    return values


def _to_max(result: AgentResult) -> tuple[int | None, int | None]:
    """Steps and optimizations until the plan first reached the maximum score (None if it never did)."""
    if result.score_max is None:
        return None, None
    scored = [entry for entry in result.history if entry.get("score") is not None]
    for index, entry in enumerate(scored):
        if entry["score"] >= result.score_max - 1e-9:  # an LLM's iterations count its unusable replies
            return int(entry.get("iteration", index)), int(entry.get("optimizer_calls", index + 1))
    return None, None


def _scores_by_optimization(result: AgentResult) -> list[list[float]]:
    """(optimizations spent, score) after the start and after each plan of the run's history."""
    scored = [entry for entry in result.history if entry.get("score") is not None]
    return [[int(e.get("optimizer_calls", n + 1)), float(e["score"])] for n, e in enumerate(scored)]


def comparison_rows(results: Sequence[Run]) -> list[dict[str, Any]]:
    """One flat row per run: reward, score, steps and optimizations to the end and to the maximum, target
    and OAR metrics, each criterion's pass (full credit), cost, and the LLM's calls and tokens."""
    rows = []
    for run in results:
        result = run.result
        plan, structures = result.metrics["plan"], result.metrics["structures"]
        target = next(values for values in structures.values() if values["role"] == "target")
        steps_to_max, optimizations_to_max = _to_max(result)
        row: dict[str, Any] = {
            "agent": run.choice.label,
            "variant": run.variant,
            "start": run.start,
            "reward": result.reward,
            "score": result.score,
            "score_max": result.score_max,
            "at_max": bool(result.score is not None and result.score >= result.score_max - 1e-9),
            "start_score": result.history[0].get("score") if result.kind == "tpp" else None,
            "target_d95_gy": target["d95_gy"],
            "target_d2_gy": target["d2_gy"],
            "hi": plan["homogeneity_index"],
            "ci": plan["conformity_index"],
        }
        for name, values in structures.items():
            if values["role"] == "oar":
                row[f"{name}_mean_gy"] = values["mean_gy"]
        for criterion in plan.get("criteria") or []:
            row[f"pass {criterion['label']}"] = bool(criterion["subscore"] >= 1.0 - 1e-9)
        row |= {
            "steps": result.steps,
            "optimizer_calls": result.optimizer_calls,
            "steps_to_max": steps_to_max,
            "optimizations_to_max": optimizations_to_max,
            "wall_s": result.wall_s,
            "angles_deg": " ".join(f"{a:g}" for a in result.angles_deg),
            "tpps": json.dumps(result.tpps.to_dict()) if result.tpps is not None else "",
            "score_by_step": json.dumps(_scores_by_optimization(result)),
        }
        if result.llm is not None:
            row |= {f"llm_{key}": result.llm.get(key) for key in _LLM_KEYS}
            row["llm_stop_reason"] = result.llm.get("stop_reason")
        rows.append(row)
    return rows


_NUMERIC = ("reward", "score", "start_score", "target_d95_gy", "target_d2_gy", "hi", "ci")
_COST = ("steps", "optimizer_calls", "steps_to_max", "optimizations_to_max", "wall_s")
_LLM_KEYS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "valid_reply_rate",
    "re_asks",
    "iterations",
    "seconds_per_call",
)
_LLM_COLUMNS = tuple(f"llm_{key}" for key in _LLM_KEYS)


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per agent (and start kind, when runs started from the default and from random TPPs): n, and
    mean, sd (ddof 1) and standard error of each numeric column; fraction at max; pass rates."""
    summaries = []
    kinds = {row.get("start", "default").partition(":")[0] for row in rows} - {"own"}

    def group(row: dict[str, Any]) -> str:
        """The agent, with its start kind when the comparison has several (default and random)."""
        kind = row.get("start", "default").partition(":")[0]
        return row["agent"] if len(kinds) < 2 else f"{row['agent']} ({kind} start)"

    for agent in dict.fromkeys(group(row) for row in rows):
        mine = [row for row in rows if group(row) == agent]
        oar_columns = [key for key in mine[0] if key.endswith("_mean_gy")]
        summary: dict[str, Any] = {"agent": agent, "n": len(mine)}
        for key in (*_NUMERIC, *oar_columns, *_COST, *_LLM_COLUMNS):
            values = np.array([row[key] for row in mine if row.get(key) is not None], dtype=float)
            if values.size == 0:
                continue
            sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
            summary[key] = {"mean": float(values.mean()), "sd": sd, "sem": sd / math.sqrt(values.size)}
        summary["fraction_at_max"] = float(np.mean([row["at_max"] for row in mine]))
        passes = [key for key in mine[0] if key.startswith("pass ")]
        summary["pass_rates"] = {
            key[5:]: float(np.mean([bool(row.get(key)) for row in mine])) for key in passes
        }
        summaries.append(summary)
    return summaries


def _cell(summary: dict[str, Any], key: str, digits: int) -> str:
    value = summary.get(key)
    if value is None:
        return "–"
    return f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"


def markdown_table(summaries: Sequence[dict[str, Any]], env: EnvName) -> str:
    """The comparison as a Markdown table (mean ± sd over the variants)."""
    oars = [key for key in summaries[0] if key.endswith("_mean_gy")]
    columns: list[tuple[str, str, int]] = [("start score", "start_score", 2)] if env == "tpp" else []
    columns += [("reward R", "reward", 3), ("score", "score", 2), ("at max", "fraction_at_max", 0)]
    columns += [("D95 Gy", "target_d95_gy", 1), ("D2 Gy", "target_d2_gy", 1), ("HI", "hi", 3)]
    columns += [("CI", "ci", 3)]
    columns += [(f"{key.removesuffix('_mean_gy')} mean Gy", key, 1) for key in oars]
    columns += [("steps", "steps", 1), ("optimizations", "optimizer_calls", 0)]
    if env == "tpp":
        columns += [("steps to max", "steps_to_max", 1), ("optimizations to max", "optimizations_to_max", 0)]
    columns += [("wall s", "wall_s", 1)]
    if any("llm_calls" in s for s in summaries):
        columns += [
            ("LLM calls", "llm_calls", 1),
            ("tokens in", "llm_prompt_tokens", 0),
            ("tokens out", "llm_completion_tokens", 0),
            ("valid replies", "llm_valid_reply_rate", 2),
            ("re-asks", "llm_re_asks", 1),
            ("iterations", "llm_iterations", 1),
            ("s per call", "llm_seconds_per_call", 1),
        ]
    header = ["agent", "n", *[c[0] for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        cells = [s["agent"], str(s["n"])]
        for _, key, digits in columns:
            at_max = key == "fraction_at_max"
            cells.append(f"{100 * s[key]:.0f} %" if at_max else _cell(s, key, digits))
        lines.append("| " + " | ".join(cells) + " |")
    criteria = list(dict.fromkeys(c for s in summaries for c in s.get("pass_rates", {})))
    if criteria:
        lines += ["", "Per-criterion pass rates (full credit):", ""]
        lines.append("| agent | " + " | ".join(criteria) + " |")
        lines.append("|" + "---|" * (len(criteria) + 1))
        for s in summaries:
            rates = s.get("pass_rates", {})
            cells = [f"{100 * rates[c]:.0f} %" if c in rates else "–" for c in criteria]
            lines.append(f"| {s['agent']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(
    folder: Path, env: EnvName, rows: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write comparison.md, comparison.csv (one row per agent and variant) and comparison.json."""
    summaries = summarize(rows)
    title = f"{meta['case']} variants {meta['variants']}, {env} environment"
    starts = ", ".join(dict.fromkeys(r["start"].partition(":")[0] for r in rows))
    text = f"# Agent comparison: {title}\n\n*{RESEARCH_USE_ONLY}*\n\n"
    text += f"Mean ± sd over {len({r['variant'] for r in rows})} variants and the starts ({starts}); "
    text += "every number from the CT-grid evaluation of the final plan. Steps and optimizations to max: "
    text += "over the runs that reached it.\n\n"
    stops: dict[str, dict[str, int]] = {}
    for row in rows:
        if row.get("llm_stop_reason"):
            reasons = stops.setdefault(row["agent"], {})
            reasons[row["llm_stop_reason"]] = reasons.get(row["llm_stop_reason"], 0) + 1
    notes = "".join(
        f"\n{agent} stopped: " + "; ".join(f"{reason} ({n}×)" for reason, n in reasons.items()) + "\n"
        for agent, reasons in stops.items()
    )
    (folder / "comparison.md").write_text(text + markdown_table(summaries, env) + notes)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (folder / "comparison.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"meta": meta, "summary": summaries, "runs": list(rows)}
    (folder / "comparison.json").write_text(json.dumps(payload, indent=2) + "\n")
    return summaries


def plot_scores_by_step(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Mean best-so-far score against fluence optimizations spent, per agent over its runs (a tuner's
    step costs a round of optimizations, an LLM's or DQN's one); a run that ended keeps its last best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for agent in dict.fromkeys(row["agent"] for row in rows):
        runs = [json.loads(r["score_by_step"]) for r in rows if r["agent"] == agent]
        runs = [run for run in runs if run]
        if not runs:
            continue
        end = max(calls for run in runs for calls, _ in run)
        grid = np.arange(1, end + 1)
        curves = []
        for run in runs:  # best score so far at each optimization count, held after the run ends
            calls, scores = np.array(run, dtype=float).T
            best = np.maximum.accumulate(scores)
            curves.append(best[np.searchsorted(calls, grid, side="right") - 1])
        axis.plot(grid, np.mean(curves, axis=0), label=f"{agent} (n={len(curves)})")
    score_max = next((r["score_max"] for r in rows if r.get("score_max")), None)
    if score_max:
        axis.axhline(score_max, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("fluence optimizations (1 = the start plan)")
    axis.set_ylabel("best score so far (mean over runs)")
    axis.set_xscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def read_training_log(path: Path) -> list[dict[str, Any]]:
    """The episode records of a ``train_log.jsonl``."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise InputError(f"training log {path} is not JSON lines: {error.msg}") from None


def plot_learning_curves(logs: dict[str, Path], path: Path, env: EnvName, window: int = 50) -> None:
    """Episode return and the final plan's score against training steps (``env`` names the
    environment in the title), raw and as a moving average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    quality_key = "final_score"  # a gantry episode's return already is its final plan's R
    for label, log_path in logs.items():
        episodes = read_training_log(log_path)
        if not episodes:
            continue
        steps = np.array([e["step"] for e in episodes])
        for axis, key in zip(axes, ("return", quality_key), strict=True):
            values = np.array([e[key] if e[key] is not None else np.nan for e in episodes], dtype=float)
            size = min(window, len(values))
            smooth = np.convolve(np.nan_to_num(values), np.ones(size) / size, mode="valid")
            line = axis.plot(steps, values, alpha=0.2, linewidth=0.6)[0]
            axis.plot(
                steps[size - 1 :], smooth, color=line.get_color(), label=f"{label} ({size}-episode mean)"
            )
        axes[1].set_ylabel("final plan's score (score card)")
    axes[0].set_ylabel("episode return")
    for axis in axes:
        axis.set_xlabel("environment steps")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"DQN training, {env} environment")
    figure.savefig(path, dpi=110)
    plt.close(figure)
