"""Plan a case with agents: the angle agent's beams go to the TPP agent, whose TPPs go to the final plan.

This is the sequence :func:`radagent.request.run_plan` runs for every front end, with the checks made
before running anything: :func:`option_values` and :func:`agent_options` build an agent's options from
plain values, :func:`case_problems` says what a case lacks for an agent (a module, a role it was trained
on, a score card) in words a physicist can act on, from the agent's registry entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from radagent.agents.checkpoint import TrainedFor, read_checkpoint_record
from radagent.agents.checkpoint import role_problems as trained_role_problems
from radagent.agents.common import AgentOptions, AgentResult
from radagent.agents.registry import AgentSpec, get_agent
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard
from radagent.patient import Case
from radagent.plan import PlanResult, PlanSettings, plan_case
from radagent.progress import ProgressCallback, scaled

__all__ = [
    "AgentRun",
    "PlannedRequest",
    "agent_options",
    "case_problems",
    "option_values",
    "parse_option_values",
    "plan_with_agents",
    "role_problems",
]


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
class PlannedRequest:
    """A plan request carried out: the final plan and the results of the agents that chose its beams and
    TPPs (what :func:`run_plan` returns)."""

    plan: PlanResult
    agents: list[AgentResult]

    def metrics(self) -> dict[str, Any]:
        """The final plan's metrics.json."""
        return self.plan.metrics()

    def description(self) -> dict[str, Any]:
        """plan.json: the final plan's description, with what each agent did under ``agents``."""
        description = self.plan.plan_description()
        if self.agents:
            description["agents"] = [result.to_dict() for result in self.agents]
        return description


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
        values[name] = raw
    return option_values(spec, values)


def option_values(spec: AgentSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Option values given as text or as JSON numbers and booleans, converted to the types of the
    options' defaults; an unknown option or a value of another kind is an InputError."""
    return {
        name: _converted(name, value, _option_field(spec, name).default) for name, value in values.items()
    }


def _option_field(spec: AgentSpec, name: str) -> dataclasses.Field:
    """The options' field called ``name``; an unknown name is an InputError listing the known ones."""
    fields = {f.name: f for f in dataclasses.fields(spec.options_type)}
    if name not in fields:
        raise InputError(f"agent {spec.name!r} has no option {name!r} (its options: {', '.join(fields)})")
    return fields[name]


def _converted(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (bool, int, float); text is parsed, numbers are checked."""
    kind = type(default)
    if kind not in (bool, int, float):
        return value
    try:
        if isinstance(value, str):
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return kind(value)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, int | float):
            raise ValueError(value)
        if kind is int and value != int(value):
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise InputError(f"agent option {name}={value!r} is not a {kind.__name__}") from None


def case_problems(run: AgentRun, case: Case, modules: bool = True) -> list[str]:
    """What ``case`` lacks for the agent (empty when it can run): an organ at risk, a score card, or —
    for a trained agent — the roles, target count and score card of the site it was trained on; with
    ``modules``, also the Python modules this interpreter lacks for it."""
    oars = [o.name for o in case.oars]
    return role_problems(run, oars, case.protocol.scorecard, modules, [t.name for t in case.targets])


def role_problems(
    run: AgentRun,
    oar_names: Sequence[str],
    card: ScoreCard | None,
    modules: bool = True,
    target_names: Sequence[str] = (),
) -> list[str]:
    """:func:`case_problems` from the chosen role names and score card alone, before a case exists (a
    panel checks this on every change of the roles)."""
    spec = run.spec
    needs = spec.needs
    problems = []
    missing = needs.missing_modules() if modules else []
    if missing:
        install = f": pip install '{needs.install}'" if needs.install else ""
        problems.append(f"{spec.name} needs {', '.join(missing)}, which this Python cannot import{install}")
    if not oar_names:
        problems.append(f"{spec.name} needs at least one organ at risk; none is chosen")
    if needs.score_card and card is None:
        problems.append(f"{spec.name} tunes TPPs on a score card; choose one")
    if needs.llm_endpoint:
        problems += _endpoint_problems(spec.name, run.options)
    if needs.trained is not None and len(target_names) > 1:
        problems.append(
            f"{spec.name} was trained on single-target plans; this case has {len(target_names)} targets "
            f"({', '.join(target_names)})"
        )
    if needs.trained is not None and oar_names:
        problems += _trained_problems(spec.name, needs.trained, oar_names, card, run.options)
    return problems


def _endpoint_problems(name: str, options: Mapping[str, Any]) -> list[str]:
    """An LLM agent's endpoint: given (or replayed), and on this machine unless allowed elsewhere."""
    from radagent.agents.llm_agents import llm_settings
    from radagent.llm.client import check_endpoint_host

    spec = get_agent(name)
    try:
        settings = llm_settings(agent_options(spec, **option_values(spec, options)))
        if not (options.get("llm_replay") or options.get("llm_dry_run")):
            check_endpoint_host(settings.url, settings.allow_remote)
    except InputError as error:
        return [f"{name}: {error}"]
    return []


def _trained_problems(
    name: str,
    trained: TrainedFor,
    oar_names: Sequence[str],
    card: ScoreCard | None,
    options: Mapping[str, Any],
) -> list[str]:
    """A trained agent's roles: its number of scored OARs, score card and beam count must match."""
    try:
        record = read_checkpoint_record(trained.folder(options.get("checkpoint")))
    except InputError as error:
        return [f"{name}: {error}"]
    return trained_role_problems(name, record, oar_names, card, options.get("beams"))


def plan_with_agents(
    case: Case,
    settings: PlanSettings,
    angle_agent: AgentRun | None = None,
    tpp_agent: AgentRun | None = None,
    progress: ProgressCallback | None = None,
) -> PlannedRequest:
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
        settings = dataclasses.replace(settings, objective_set="tpp", tpps=results[-1].tpps)
    plan = plan_case(case, settings, progress=scaled(progress, len(results) / stages, 1.0))
    return PlannedRequest(plan, results)
