"""Plan a case with agents: the angle agent's beams go to the TPP agent, whose TPPs go to the final plan.

This is the one sequence both front ends run (the CLI's ``plan --agent``, the Slicer module's logic),
with the checks a front end makes before running anything: :func:`agent_options` builds an agent's
options from plain values, :func:`case_problems` says what a case lacks for an agent (a role it was
trained on, a score card), in words a physicist can act on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from radagent.agents.common import AgentOptions, AgentResult
from radagent.agents.learned import checkpoint_folder, read_checkpoint_record
from radagent.agents.registry import AgentSpec, get_agent
from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard
from radagent.optimize import scored_oar_names
from radagent.patient import Case
from radagent.plan import PlanResult, PlanSettings, plan_case
from radagent.progress import ProgressCallback, scaled

__all__ = [
    "AgentPlan",
    "AgentRun",
    "agent_options",
    "agent_runs",
    "case_problems",
    "parse_option_values",
    "plan_with_agents",
    "role_problems",
]

_DQN_ENV = {"dqn-gantry": "gantry", "dqn-tpp": "tpp"}


@dataclass(frozen=True)
class AgentRun:
    """An agent to run by registry name, with option values (field name → value) for its options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> AgentSpec:
        """The registry entry (an unknown name is an InputError listing the known ones)."""
        return get_agent(self.name)


@dataclass
class AgentPlan:
    """The final plan and the agents' results that chose its beams and TPPs."""

    plan: PlanResult
    agents: list[AgentResult]


def agent_runs(
    angle_agent: str | None,
    tpp_agent: str | None,
    *,
    seed: int,
    agent_grid_mm: float,
    beams: int | None = None,
    angle_options: Mapping[str, Any] | None = None,
    tpp_options: Mapping[str, Any] | None = None,
) -> tuple[AgentRun | None, AgentRun | None]:
    """The runs of a plan's agents (None where absent) with what each takes from the plan: the seed, the
    agent grid (beamlet width = dose grid spacing) and, for the angle agent, the beam count; explicit
    option values come last and win."""
    grid = DoseEngineSettings(bixel_mm=agent_grid_mm, dose_grid_mm=agent_grid_mm)
    common = {"seed": seed, "engine": grid}
    beam_count = {"beams": beams} if beams is not None else {}
    angle = AgentRun(angle_agent, {**common, **beam_count, **(angle_options or {})}) if angle_agent else None
    tpp = AgentRun(tpp_agent, {**common, **(tpp_options or {})}) if tpp_agent else None
    return angle, tpp


def agent_options(spec: AgentSpec, **values: Any) -> AgentOptions:
    """The agent's options dataclass from ``values``; an unknown or bad value is an InputError."""
    for name in values:
        _option_field(spec, name)
    try:
        return spec.options_type(**values)
    except (TypeError, ValueError) as error:
        raise InputError(f"agent {spec.name!r}: {error}") from None


def parse_option_values(spec: AgentSpec, text: str) -> dict[str, Any]:
    """``"max_steps=10, checkpoint=runs/t1"`` → option values, converted to the types of the options'
    defaults (int, float, bool or text); used by front ends that take options as one line of text."""
    values: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = (p.strip() for p in item.partition("="))
        if not sep or not name:
            raise InputError(f"agent option {item!r} is not NAME=VALUE")
        values[name] = _converted(name, raw, _option_field(spec, name).default)
    return values


def _option_field(spec: AgentSpec, name: str) -> dataclasses.Field:
    """The options' field called ``name``; an unknown name is an InputError listing the known ones."""
    fields = {f.name: f for f in dataclasses.fields(spec.options_type)}
    if name not in fields:
        raise InputError(f"agent {spec.name!r} has no option {name!r} (its options: {', '.join(fields)})")
    return fields[name]


def _converted(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise InputError(f"agent option {name}={raw!r} is not a {type(default).__name__}") from None
    return raw


def case_problems(run: AgentRun, case: Case) -> list[str]:
    """What ``case`` lacks for the agent (empty when it can run): an organ at risk, a score card, or —
    for a trained agent — the roles and score card of the site it was trained on."""
    return role_problems(run, [o.name for o in case.oars], case.protocol.scorecard)


def role_problems(run: AgentRun, oar_names: Sequence[str], card: ScoreCard | None) -> list[str]:
    """:func:`case_problems` from the chosen OAR names and score card alone, before a case exists (a
    panel checks this on every change of the roles)."""
    spec = run.spec
    problems = []
    if not oar_names:
        problems.append(f"{spec.name} needs at least one organ at risk; none is chosen")
    if spec.kind == "tpp" and card is None:
        problems.append(f"{spec.name} tunes TPPs on a score card; choose one")
    if spec.name in _DQN_ENV and oar_names:
        problems += _trained_problems(spec.name, oar_names, card, run.options)
    return problems


def _trained_problems(
    name: str, oar_names: Sequence[str], card: ScoreCard | None, options: Mapping[str, Any]
) -> list[str]:
    """A trained agent's roles: its number of scored OARs, score card and beam count must match."""
    record = read_checkpoint_record(checkpoint_folder(_DQN_ENV[name], options.get("checkpoint")))
    strict, info = record["env_spec"]["strict"], record["env_spec"]["info"]
    trained_oars = ", ".join(info.get("oars", [])) or "?"
    problems = []
    scored = scored_oar_names(oar_names, card)
    if strict.get("scorecard") is not None and (card is None or card.name != strict["scorecard"]):
        chosen = f"'{card.name}'" if card is not None else "none"
        problems.append(f"{name} was trained with score card '{strict['scorecard']}'; this case has {chosen}")
    elif strict["scored_oars"] != len(scored):
        problems.append(
            f"{name} was trained on {strict['scored_oars']} scored organs at risk ({trained_oars}); "
            f"this case has {len(scored)} ({', '.join(scored)})"
        )
    beams = options.get("beams")
    if "beams" in strict and beams is not None and beams != strict["beams"]:
        problems.append(f"{name} was trained to choose {strict['beams']} beams, not {beams}")
    return problems


def plan_with_agents(
    case: Case,
    settings: PlanSettings,
    angle_agent: AgentRun | None = None,
    tpp_agent: AgentRun | None = None,
    progress: ProgressCallback | None = None,
) -> AgentPlan:
    """Run the angle agent (its beams replace ``settings.angles_deg``), then the TPP agent on those beams
    (its TPPs replace ``settings.tpps``), then plan on the settings' grid. Either agent may be absent.

    Every agent's problems with the case are checked first, so nothing runs for a case an agent refuses.
    """
    runs = [r for r in (angle_agent, tpp_agent) if r is not None]
    for run, kind in ((angle_agent, "angles"), (tpp_agent, "tpp")):
        if run is not None and run.spec.kind != kind:
            raise InputError(f"agent {run.name!r} chooses {run.spec.kind}, not {kind}")
    problems = [p for run in runs for p in case_problems(run, case)]
    if problems:
        raise InputError("; ".join(problems))
    if tpp_agent is not None and settings.fluence == "uniform":
        raise InputError(f"agent {tpp_agent.name!r} tunes optimized fluence, not uniform fluence")
    stages = len(runs) + 1
    results: list[AgentResult] = []
    if angle_agent is not None:
        options = agent_options(angle_agent.spec, **angle_agent.options)
        results.append(angle_agent.spec.run(case, options, scaled(progress, 0, 1 / stages)))
        settings = dataclasses.replace(settings, angles_deg=results[-1].angles_deg)
    if tpp_agent is not None:
        values = {**tpp_agent.options, "angles_deg": settings.angles_deg}
        options = agent_options(tpp_agent.spec, **values)
        begin = len(results) / stages
        results.append(tpp_agent.spec.run(case, options, scaled(progress, begin, begin + 1 / stages)))
        settings = dataclasses.replace(settings, tpps=results[-1].tpps)
    plan = plan_case(case, settings, progress=scaled(progress, len(results) / stages, 1.0))
    return AgentPlan(plan, results)
