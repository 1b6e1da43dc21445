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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from radagent.agents import AgentResult, get_agent
from radagent.cases import load_case
from radagent.envs import GantryConfig, GantryEnv, TPPConfig, TPPEnv
from radagent.envs.common import AGENT_GRID_MM, agent_engine
from radagent.errors import InputError
from radagent.progress import ProgressCallback, report, scaled

__all__ = [
    "AgentChoice",
    "comparison_rows",
    "make_env",
    "parse_agents",
    "parse_variants",
    "plot_learning_curves",
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


def run_comparison(
    agents: Sequence[AgentChoice],
    case: str,
    variants: Sequence[int],
    *,
    grid_mm: float = AGENT_GRID_MM,
    start: Literal["default", "random"] = "default",
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> list[tuple[AgentChoice, int, AgentResult]]:
    """Run every agent once on every variant (seed ``seed + variant``); the results in run order."""
    engine = agent_engine(grid_mm)
    results = []
    total = len(agents) * len(variants)
    for a, choice in enumerate(agents):
        spec = get_agent(choice.name)
        for v, variant in enumerate(variants):
            done = a * len(variants) + v
            report(progress, done / total, f"{choice.label} on variant {variant}")
            options = spec.options_type(seed=seed + variant, engine=engine)
            if spec.kind == "tpp":
                options = replace(options, start=start)
            if choice.checkpoint is not None:
                options = replace(options, checkpoint=choice.checkpoint)
            if choice.options:
                options = replace(options, **_per_run(choice.options, choice.label, variant))
            sub = scaled(progress, done / total, (done + 1) / total)
            results.append((choice, variant, spec.run(load_case(case, variant), options, sub)))
    report(progress, 1.0, "comparison done")
    return results


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


def comparison_rows(results: Sequence[tuple[AgentChoice, int, AgentResult]]) -> list[dict[str, Any]]:
    """One flat row per (agent, variant): reward, score, target and OAR metrics, cost."""
    rows = []
    for choice, variant, result in results:
        plan, structures = result.metrics["plan"], result.metrics["structures"]
        target = next(values for values in structures.values() if values["role"] == "target")
        row: dict[str, Any] = {
            "agent": choice.label,
            "variant": variant,
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
        row |= {
            "steps": result.steps,
            "optimizer_calls": result.optimizer_calls,
            "wall_s": result.wall_s,
            "angles_deg": " ".join(f"{a:g}" for a in result.angles_deg),
            "tpps": json.dumps(result.tpps.to_dict()) if result.tpps is not None else "",
        }
        if result.llm is not None:
            row |= {f"llm_{key}": result.llm.get(key) for key in _LLM_KEYS}
            row["llm_stop_reason"] = result.llm.get("stop_reason")
        rows.append(row)
    return rows


_NUMERIC = ("reward", "score", "start_score", "target_d95_gy", "target_d2_gy", "hi", "ci")
_COST = ("steps", "optimizer_calls", "wall_s")
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
    """Per agent: n, and mean, sd (ddof 1) and standard error of each numeric column; fraction at max."""
    summaries = []
    for agent in dict.fromkeys(row["agent"] for row in rows):
        mine = [row for row in rows if row["agent"] == agent]
        oar_columns = [key for key in mine[0] if key.endswith("_mean_gy")]
        summary: dict[str, Any] = {"agent": agent, "n": len(mine)}
        for key in (*_NUMERIC, *oar_columns, *_COST, *_LLM_COLUMNS):
            values = np.array([row[key] for row in mine if row.get(key) is not None], dtype=float)
            if values.size == 0:
                continue
            sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
            summary[key] = {"mean": float(values.mean()), "sd": sd, "sem": sd / math.sqrt(values.size)}
        summary["fraction_at_max"] = float(np.mean([row["at_max"] for row in mine]))
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
    columns += [("steps", "steps", 1), ("optimizations", "optimizer_calls", 0), ("wall s", "wall_s", 1)]
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
    return "\n".join(lines) + "\n"


def write_comparison(
    folder: Path, env: EnvName, rows: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write comparison.md, comparison.csv (one row per agent and variant) and comparison.json."""
    summaries = summarize(rows)
    title = f"{meta['case']} variants {meta['variants']}, {env} environment"
    text = f"# Agent comparison: {title}\n\nMean ± sd over {len({r['variant'] for r in rows})} variants"
    text += "; every number from the CT-grid evaluation of the final plan.\n\n"
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
