"""LLM agents that tune TPPs (METHOD §5): ``llm-tpp`` (unguided) and ``m2m`` (guided by a knowledge card).

Each iteration the LLM gets the score card (each criterion's value, thresholds and sub-score), the total
score and its maximum, a compact DVH (volume at ten dose levels per structure), the current TPPs with
their bounds and the recent (TPPs → score) history; ``m2m`` also gets the guidance block built from the
knowledge card, mapped to this case's roles. It replies ``{"tpp": {NAME: value}, "rationale": "..."}``
(a partial update); the TPP environment (whole-vector ``set`` actions) plans it, so its scores are the
environment's. Structures are named by role — the target, and the OARs ranked by distance to the target
(OAR1 the nearest) — which is also how the card's knowledge carries to other sites.

A reply with unknown names or non-numbers is re-asked once with the error, then the previous TPPs are
kept; values outside the bounds are clipped and the clipping recorded. The run stops at the maximum
score, after ``iterations``, after ``patience`` iterations without improvement, or when the endpoint
fails; the best plan is returned.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from radagent.agents.common import SCORE_TOLERANCE, AgentResult, TPPAgentOptions, improves, tpp_record
from radagent.agents.knowledge import KnowledgeCard, RoleMapping, oar_proximity, read_card
from radagent.agents.llm_agents import LLMOptions, llm_client, re_ask, run_usage
from radagent.envs import TPPConfig, TPPEnv
from radagent.llm.client import LLMClient, LLMDryRunError, LLMError, Message
from radagent.llm.prompts import (
    TppEntry,
    TppHistoryEntry,
    estimated_tokens,
    safe_name,
    tpp_reply_schema,
    tpp_system_prompt,
    tpp_user_prompt,
)
from radagent.llm.replies import ReplyError, validated_reply
from radagent.optimize import TPPs
from radagent.optimize.tpp import TARGET_LABEL
from radagent.patient import Case
from radagent.progress import ProgressCallback, report

__all__ = ["DVH_LEVELS", "LLMTPPOptions", "M2MOptions", "guidance_lines", "run_llm_tpp", "run_m2m"]

_RATIONALE_CHARS = 600  # a longer rationale is cut, not refused

DVH_LEVELS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)  # fractions of p in the compact DVH


@dataclass(frozen=True)
class LLMTPPOptions(TPPAgentOptions, LLMOptions):
    """An LLM tuning TPPs: at most ``iterations`` plans, stopping at the maximum score; ``history`` recent
    (TPPs → score) entries in each prompt. Text only (no renderings)."""

    iterations: int = 20
    patience: int = 20
    history: int = 6
    images: bool = False

    def __post_init__(self) -> None:
        for name in ("iterations", "patience", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class M2MOptions(LLMTPPOptions):
    """The M2M agent: ``llm-tpp`` guided by a knowledge card (default: the card shipped with the package,
    from the shipped ``dqn-tpp`` on prostate variants 0–29)."""

    knowledge: str | None = None


@dataclass
class _Iteration:
    """What one iteration asked and got."""

    prompt_tokens_estimate: int
    reply: str = ""
    first_reply: str = ""  # the unusable reply that was asked again, when one was
    valid: bool = False
    re_asked: bool = False
    error: str = ""
    clipped: list[dict[str, float | str]] = field(default_factory=list)
    rationale: str = ""


@dataclass(frozen=True)
class _Names:
    """The TPPs' names in the prompt (``t_target``, ``lambda_OAR1``…) and in the environment."""

    prompt_to_env: dict[str, str]

    @classmethod
    def of(cls, tpps: TPPs, ranked_oars: list[str]) -> _Names:
        """OAR k is the k-th nearest OAR to the target."""
        structures = {"target": TARGET_LABEL} | {f"OAR{k}": n for k, n in enumerate(ranked_oars, start=1)}
        return cls(
            {
                f"{kind}_{role}": f"{kind}_{env}"
                for kind in ("t", "lambda", "V")
                for role, env in structures.items()
            }
        )

    def entries(self, tpps: TPPs) -> list[TppEntry]:
        """The current TPPs with their bounds, in prompt order."""
        values, (low, high) = tpps.to_dict(), TPPs.bounds(len(tpps.oar_names))
        index = {name: n for n, name in enumerate(tpps.names)}
        return [
            TppEntry(p, values[e], float(low[index[e]]), float(high[index[e]]))
            for p, e in self.prompt_to_env.items()
        ]


def _updated(
    value: dict[str, Any], tpps: TPPs, names: _Names
) -> tuple[TPPs, list[dict[str, float | str]], dict[str, float]]:
    """The TPPs after a reply's partial update, the clipped entries (asked, used) and the changes by
    prompt name; a ReplyError for unknown names or values that are not finite numbers."""
    given = value["tpp"]
    unknown = sorted(set(given) - set(names.prompt_to_env))
    if unknown:
        raise ReplyError(f"unknown TPP names {unknown}; use only {', '.join(names.prompt_to_env)}")
    bad = [
        n
        for n, v in given.items()
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
    ]
    if bad:
        raise ReplyError(f"the values of {bad} are not numbers; give each TPP a number")
    current, index = tpps.to_dict(), {name: n for n, name in enumerate(tpps.names)}
    low, high = TPPs.bounds(len(tpps.oar_names))
    values, clipped, changes = list(tpps.values), [], {}
    for prompt_name, asked in given.items():
        entry = names.prompt_to_env[prompt_name]
        n = index[entry]
        used = float(np.clip(float(asked), low[n], high[n]))
        if used != float(asked):
            clipped.append({"tpp": prompt_name, "asked": float(asked), "used": used})
        if used != current[entry]:
            changes[prompt_name] = used
        values[n] = used
    return TPPs(tpps.oar_names, tuple(values)), clipped, changes


def _ask(
    client: LLMClient,
    messages: list[Message],
    sent_schema: dict[str, Any],
    tpps: TPPs,
    names: _Names,
    record: _Iteration,
) -> tuple[TPPs, dict[str, float]] | None:
    """The TPPs of the reply; re-asked once with the error; None when still unusable."""
    accepted = tpp_reply_schema()
    for attempt in range(2):
        reply = client.chat(messages, sent_schema)
        record.reply = reply.text
        try:
            value = validated_reply(reply.text, accepted)
            updated, clipped, changes = _updated(value, tpps, names)
        except ReplyError as error:
            record.error = str(error)
            if attempt == 0:
                record.re_asked, record.first_reply = True, reply.text
                messages = re_ask(messages, reply.text, error)
            continue
        record.valid, record.clipped, record.error = True, clipped, ""
        record.rationale = str(value["rationale"])[:_RATIONALE_CHARS]
        return updated, changes
    return None


def _compact_dvh(case: Case, dose_ct_gy: np.ndarray, structures: list[str]) -> dict[str, list[float]]:
    """Per structure, the % of its volume receiving at least each of :data:`DVH_LEVELS` × p."""
    p = case.prescription_gy
    dvh = {}
    for name in structures:
        doses = dose_ct_gy[case.structure(name).mask]
        dvh[name] = [100.0 * float(np.mean(doses >= level * p)) for level in DVH_LEVELS]
    return dvh


def _range(stats: dict[str, Any], scale: float = 1.0) -> str:
    def number(key: str) -> str:
        return f"{stats[key] * scale:.3g}"

    middle, wide = f"{number('p25')}–{number('p75')}", f"{number('p5')}–{number('p95')}"
    return f"median {number('median')} (middle half {middle}, 90 % within {wide})"


def guidance_lines(card: KnowledgeCard, mapping: RoleMapping, lambda_target: float) -> list[str]:
    """The card's statistics for this case's roles, as the prompt's guidance block (priors, not limits):
    the priority order, each TPP's typical final values and how the agent moved it, the largest effects."""
    keys = {f"OAR{k}": key for k, (_, _, key) in enumerate(mapping.oars, start=1)}
    roles = ["target", *keys]
    card_role = {"target": "target"} | keys
    back = {key: role for role, key in keys.items() if key != "pooled"} | {"target": "target"}

    def prompt_name(card_name: str) -> str | None:
        kind, _, role = card_name.partition("_")
        return f"{kind}_{back[role]}" if role in back else None

    order = [n for n in (prompt_name(c) for c in card.data["priority"]) if n is not None]
    lines = ["Priority (the agent changed these first): " + ", ".join(order)]
    for role in roles:
        key = card_role[role]
        for kind in ("t", "lambda", "V"):
            name = f"{kind}_{role}"
            if kind == "lambda" and role == "target":
                text = "the unit of the other lambdas"
            else:
                stats = card.statistics(kind, key)
                if kind == "lambda":  # the card's ratios, in this plan's units
                    text = f"(× lambda_target = {lambda_target:.3g}) {_range(stats, lambda_target)}"
                else:
                    text = _range(stats)
            change = card.change(kind, key)
            if change is not None and change["changed_fraction"] > 0:
                text += (
                    f"; changed in {change['changed_fraction']:.0%} of successful episodes, first at step "
                    f"{change['mean_first_step']:.1f} on average, {change['steps_up']} steps up / "
                    f"{change['steps_down']} down"
                )
            elif change is not None:
                text += "; the agent left it as it was"
            source = "" if key in ("target", role) else f" [card {key}]"
            lines.append(f"{name}{source}: {text}")
    effects = [row for row in card.data["effects"] if row["count"] >= 3]
    best = sorted(effects, key=lambda row: -row["mean_score_change"])[:5]
    if best:
        mapped = []
        for row in best:
            card_name, _, direction = row["action"].partition(" ")
            name = prompt_name(card_name)
            if name is not None:
                mapped.append(f"{name} {direction} {row['mean_score_change']:+.2f}")
        if mapped:
            lines.append("Largest mean score change of one step (agent's experience): " + ", ".join(mapped))
    return lines


def _run(
    agent: str,
    case: str | Case,
    options: LLMTPPOptions,
    card: KnowledgeCard | None,
    progress: ProgressCallback | None,
) -> AgentResult:
    """The loop both agents share; ``card`` None is the unguided agent."""
    start = time.perf_counter()
    settings, client = llm_client(options)
    config = TPPConfig(
        engine=options.engine,
        angles_deg=options.angles_deg,
        start=options.start,
        max_steps=options.iterations,
        action="set",
    )
    env = TPPEnv(case=case, config=config)
    _, info = env.reset(seed=options.seed)
    patient = env.patient.case
    proximity = oar_proximity(patient, env.roles.target, env.roles.oars)
    ranked = [name for name, _ in proximity]
    names = _Names.of(env.tpps, ranked)
    labels = {env.roles.target: safe_name(env.roles.target, "target")}
    labels |= {name: safe_name(name, f"OAR{k}") for k, name in enumerate(ranked, start=1)}
    mapping = card.mapping(patient, env.roles.target, env.roles.oars) if card is not None else None
    if mapping is not None:
        mapping_lines = mapping.lines(labels)
    else:
        mapping_lines = [f"{labels[name]}: {mm:.0f} mm from the target" for name, mm in proximity]
    score_max = float(info["score_max"])
    source = card.data["source"].get("case", "other") if card is not None else None
    system = tpp_system_prompt(score_max, len(ranked), source)
    sent_schema = tpp_reply_schema(list(names.prompt_to_env))
    seen = [TppHistoryEntry(0, (), float(info["score"]), score_max)]
    history = [{**tpp_record(None, None, 0.0, info), "optimizer_calls": 1, "llm": None}]
    best_info, best_tpps, best_iteration = info, env.tpps, 0
    stale, stop, optimizations = 0, "", 1
    for iteration in range(1, options.iterations + 1):
        if best_info["score"] >= score_max - SCORE_TOLERANCE:
            stop = "maximum score"
            break
        report(
            progress,
            (iteration - 1) / options.iterations,
            f"{agent}: iteration {iteration}, score {info['score']:.2f}",
        )
        guidance = (
            guidance_lines(card, mapping, env.tpps.priorities[0]) if card is not None and mapping else []
        )
        text = tpp_user_prompt(
            iteration,
            options.iterations,
            float(info["score"]),
            score_max,
            info["metrics"]["plan"]["criteria"],
            labels,
            _compact_dvh(patient, env.plan_dose_ct_gy, [env.roles.target, *ranked]),
            DVH_LEVELS,
            names.entries(env.tpps),
            seen[-options.history :],
            guidance,
            mapping_lines,
        )
        tokens = estimated_tokens(system + text)
        if tokens > options.llm_context_tokens - settings.max_tokens:
            stop = (
                f"the prompt (≈{tokens} tokens) does not fit the model's context of "
                f"{options.llm_context_tokens} tokens with {settings.max_tokens} for the reply; "
                "raise --llm-context"
            )
            break
        record = _Iteration(tokens)
        messages = [Message("system", system), Message("user", text)]
        try:
            answer = _ask(client, messages, sent_schema, env.tpps, names, record)
        except (LLMDryRunError, LLMError) as error:
            stop = str(error)
            history.append({"iteration": iteration, "llm": asdict(record), "stopped": stop})
            break
        if answer is None:  # unusable twice: keep the previous TPPs
            history.append({"iteration": iteration, "llm": asdict(record), "kept_previous": True})
            stale += 1
        else:
            updated, changes = answer
            optimizations += bool(changes)  # an unchanged vector keeps its plan: no optimization
            _, reward, _, _, info = env.step(np.array(updated.values))
            seen.append(TppHistoryEntry(iteration, tuple(changes.items()), float(info["score"]), score_max))
            history.append(
                {
                    **tpp_record(None, None, reward, info),
                    "iteration": iteration,
                    "optimizer_calls": optimizations,
                    "llm": asdict(record),
                }
            )
            if improves(info, best_info):
                best_info, best_tpps, best_iteration, stale = info, env.tpps, iteration, 0
            else:
                stale += 1
            status = f"{agent}: iteration {iteration}, score {info['score']:.2f}: {record.rationale[:120]}"
            report(progress, iteration / options.iterations, status)  # the panel's status line shows it
        if stale >= options.patience and iteration < options.iterations:
            stop = f"no improvement in {options.patience} iterations"
            break
    else:
        stop = (
            "maximum score"
            if best_info["score"] >= score_max - SCORE_TOLERANCE
            else f"{options.iterations} iterations"
        )
    report(progress, 1.0, f"{agent}: done")
    env.close()
    calls = [h["llm"] for h in history[1:] if h.get("llm")]
    usage = run_usage(client, calls, stop) | {
        "clipped_values": sum(len(c["clipped"]) for c in calls),
        "best_iteration": best_iteration,
        "roles": {
            "target": env.roles.target,
            "oars_by_proximity": [{"name": n, "min_distance_mm": d} for n, d in proximity],
        },
    }
    plans = 1 + sum(1 for h in history[1:] if "tpps" in h)
    knowledge = {**card.provenance(), **mapping.to_dict()} if card is not None and mapping else None
    return AgentResult(
        agent=agent,
        kind="tpp",
        case=best_info["case"],
        angles_deg=tuple(options.angles_deg),
        tpps=best_tpps,
        reward=best_info["plan_reward"],
        score=best_info["score"],
        score_max=score_max,
        steps=plans - 1,
        optimizer_calls=optimizations,
        wall_s=time.perf_counter() - start,
        history=history,
        options=options,
        note=f"best of {plans} plans (iteration {best_iteration}); {stop}",
        metrics=best_info["metrics"],
        llm=usage,
        knowledge=knowledge,
    )


def run_llm_tpp(
    case: str | Case, options: LLMTPPOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Tune TPPs with an LLM from the score card, DVH and history alone."""
    return _run("llm-tpp", case, options, None, progress)


def run_m2m(case: str | Case, options: M2MOptions, progress: ProgressCallback | None = None) -> AgentResult:
    """Tune TPPs with an LLM guided by a trained agent's knowledge card, mapped to this case's roles."""
    return _run("m2m", case, options, read_card(options.knowledge), progress)
