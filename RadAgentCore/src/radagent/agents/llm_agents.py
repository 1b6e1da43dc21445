"""LLM agents (METHOD §5): a chat model is the policy, with no weight updates. ``llm-gantry`` is the
Text-to-Plan action model: each iteration it sees renderings of the current plan (or, for text-only
models, every candidate beam's path), the metrics and the history of (angles → reward, score), and
replies with a whole new angle set, which the gantry environment (refinement mode, ``set`` action) plans
and scores, so its reward is the environment's.

An invalid reply is re-asked once with the error, then the previous set is kept. The run stops after
``iterations`` or ``patience`` iterations without improvement, or when the endpoint fails (the best plan so
far is returned and the result says why). Every iteration's prompt size, reply, validity, reward and
rationale are in the result's history; the audit log (``llm_log``) can replay the run without the endpoint.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from radagent.agents.common import AgentResult, AngleAgentOptions, angle_record
from radagent.beams import BeamGeometry
from radagent.envs import GantryConfig, GantryEnv
from radagent.errors import InputError
from radagent.llm.client import (
    LLMClient,
    LLMDryRunError,
    LLMError,
    LLMSettings,
    Message,
    read_audit_log,
)
from radagent.llm.prompts import (
    BeamPath,
    HistoryEntry,
    estimated_tokens,
    fit_history,
    gantry_reply_schema,
    gantry_system_prompt,
    gantry_user_prompt,
    role_labels,
)
from radagent.llm.replies import ReplyError, validated_reply
from radagent.patient import Case
from radagent.progress import ProgressCallback, report
from radagent.render import render_views

__all__ = [
    "MODEL_VARIABLE",
    "URL_VARIABLE",
    "LLMGantryOptions",
    "LLMOptions",
    "beam_paths",
    "llm_client",
    "llm_settings",
    "re_ask",
    "run_llm_gantry",
    "run_usage",
]

URL_VARIABLE, MODEL_VARIABLE = "RADAGENT_LLM_URL", "RADAGENT_LLM_MODEL"


@dataclass(frozen=True)
class LLMOptions:
    """An LLM agent's endpoint and budget (URL and model default to RADAGENT_LLM_URL / _MODEL; the API key
    only ever comes from RADAGENT_LLM_API_KEY), and how it runs: iterations, patience, images."""

    llm_url: str | None = None
    llm_model: str | None = None
    llm_api: str = "openai"
    llm_temperature: float = 0.0
    llm_max_tokens: int = 400
    llm_timeout_s: float = 120.0
    llm_context_tokens: int = 8192  # the model's context window, which the prompt must fit
    llm_allow_remote: bool = False
    llm_max_calls: int | None = None
    llm_max_total_tokens: int | None = None
    llm_log: str | None = None  # audit log (JSON lines)
    llm_dry_run: str | None = None  # folder: write the first prompt there, send nothing
    llm_replay: str | None = None  # an audit log to answer from instead of the endpoint
    images: bool = True
    image_px: int = 512
    iterations: int = 10
    patience: int = 3


@dataclass(frozen=True)
class LLMGantryOptions(AngleAgentOptions, LLMOptions):
    """The Text-to-Plan agent: K beams among candidates ``candidate_step_deg`` apart, chosen by an LLM."""


def llm_settings(options: LLMOptions) -> LLMSettings:
    """The transport settings of an agent's options (environment variables fill a missing URL or model)."""
    url = options.llm_url or os.environ.get(URL_VARIABLE, "")
    model = options.llm_model or os.environ.get(MODEL_VARIABLE, "")
    if options.llm_replay or options.llm_dry_run:  # no endpoint is contacted
        url, model = url or "http://127.0.0.1", model or "replay"
    if not url or not model:
        raise InputError(
            f"an LLM agent needs an endpoint: give --llm-url, --llm-model ({URL_VARIABLE}, {MODEL_VARIABLE})"
        )
    return LLMSettings(
        url=url,
        model=model,
        api=options.llm_api,  # type: ignore[arg-type]
        temperature=options.llm_temperature,
        seed=getattr(options, "seed", 0),
        max_tokens=options.llm_max_tokens,
        timeout_s=options.llm_timeout_s,
        allow_remote=options.llm_allow_remote,
        max_calls=options.llm_max_calls,
        max_total_tokens=options.llm_max_total_tokens,
        log_path=options.llm_log,
        dry_run_dir=options.llm_dry_run,
    )


def llm_client(options: LLMOptions) -> tuple[LLMSettings, LLMClient]:
    """The transport settings and a client for an agent's options: answering from ``llm_replay`` when
    given; a remote endpoint without the opt-in is refused here, before any connection."""
    settings = llm_settings(options)
    replay = read_audit_log(options.llm_replay) if options.llm_replay else None
    return settings, LLMClient(settings, replay=replay)


def re_ask(messages: list[Message], reply: str, error: Exception) -> list[Message]:
    """The conversation asking again once: the unusable reply and what was wrong with it."""
    problem = f"That reply cannot be used: {error}. Reply again with the JSON object only."
    return [*messages, Message("assistant", reply), Message("user", problem)]


def run_usage(client: LLMClient, records: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    """What a run spent and how the model did: the client's calls and tokens, iterations, the rate of
    usable replies, re-asks and why the run stopped (``records``: each iteration's ``llm`` record)."""
    return client.usage() | {
        "iterations": len(records),
        "valid_reply_rate": sum(bool(r["valid"]) for r in records) / len(records) if records else None,
        "re_asks": sum(bool(r["re_asked"]) for r in records),
        "stop_reason": stop,
    }


def beam_paths(
    case: Case,
    angles_deg: tuple[float, ...],
    isocenter_ras: tuple[float, float, float],
    labels: dict[str, str],
) -> list[BeamPath]:
    """For each angle, the central axis from the skin to the isocentre (tissue and water-equivalent mm)
    and the labelled OARs it crosses before and after the target, with their distance from the target."""
    density = case.relative_electron_density()
    body = case.body.mask
    target = case.target_mask()
    oars = {o.name: o.mask for o in case.oars if o.name in labels}
    to_ijk = case.grid.ras_to_ijk
    step_mm = 1.0
    distances = np.arange(-400.0, 400.0, step_mm)  # along the axis; 0 at the isocentre, < 0 upstream
    paths = []
    for angle in angles_deg:
        beam = BeamGeometry(angle, isocenter_ras, case.patient_position)
        points = np.asarray(isocenter_ras) + distances[:, None] * beam.direction_ras
        ijk = np.rint(points @ to_ijk[:3, :3].T + to_ijk[:3, 3]).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(case.grid.shape[::-1])), axis=1)
        k, j, i = (np.clip(ijk[:, n], 0, case.grid.shape[2 - n] - 1) for n in (2, 1, 0))

        def along(mask: np.ndarray, k=k, j=j, i=i, inside=inside) -> np.ndarray:
            return mask[k, j, i] & inside

        in_body, in_target = along(body), along(target)
        upstream = distances < 0
        path_mm = float(np.count_nonzero(in_body & upstream) * step_mm)
        wed_mm = float(np.sum(density[k, j, i][in_body & upstream & inside]) * step_mm)
        entry, exit_ = _target_span(distances, in_target)
        crossings = []
        for name, mask in oars.items():
            hits = distances[along(mask)]
            before, after = hits[hits < entry], hits[hits > exit_]
            if before.size:
                crossings.append((labels[name], "in", float(entry - before.max())))
            if after.size:
                crossings.append((labels[name], "out", float(after.min() - exit_)))
        paths.append(BeamPath(float(angle), path_mm, wed_mm, tuple(sorted(crossings, key=lambda c: c[2]))))
    return paths


def _target_span(distances: np.ndarray, in_target: np.ndarray) -> tuple[float, float]:
    """Where the axis enters and leaves the target (the isocentre when it misses it)."""
    hits = distances[in_target]
    return (float(hits.min()), float(hits.max())) if hits.size else (0.0, 0.0)


@dataclass
class _Iteration:
    """What one iteration asked and got."""

    prompt_tokens_estimate: int
    reply: str = ""
    valid: bool = False
    re_asked: bool = False
    error: str = ""
    snapped: tuple[tuple[float, float], ...] = ()
    rationale: str = ""
    history_dropped: int = 0  # entries of the history left out of this prompt to fit the context


def _angles_from_reply(
    value: dict[str, Any], candidates: tuple[float, ...], beams: int
) -> tuple[list[int], list]:
    """Candidate indices of the replied angles, each snapped to the nearest candidate (snaps recorded);
    a ReplyError when they are not ``beams`` different candidates after snapping."""
    step = 360.0 / len(candidates)
    indices, snaps = [], []
    for angle in value["gantry_angles"]:
        index = round(float(angle) / step) % len(candidates)
        if abs((candidates[index] - float(angle) + 180.0) % 360.0 - 180.0) > 1e-6:  # off the grid
            snaps.append((float(angle), candidates[index]))
        indices.append(index)
    if len(set(indices)) != beams:
        chosen = ", ".join(f"{candidates[i]:g}" for i in indices)
        raise ReplyError(
            f"the angles must be {beams} different candidates; after snapping they are [{chosen}]"
        )
    return indices, snaps


def run_llm_gantry(
    case: str | Case, options: LLMGantryOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Refine the angle set with an LLM: ask, plan its reply, show it the result, ``iterations`` times."""
    start = time.perf_counter()
    settings, client = llm_client(options)
    config = GantryConfig(
        engine=options.engine,
        beams=options.beams,
        candidate_step_deg=options.candidate_step_deg,
        mode="refinement",
        refinement_action="set",
        refinement_iterations=options.iterations,
    )
    env = GantryEnv(case=case, config=config)
    _, info = env.reset(seed=options.seed)
    patient = env.patient.case
    labels = role_labels([t.name for t in patient.targets], [o.name for o in patient.oars])
    iso = patient.isocenter_ras
    paths = None if options.images else beam_paths(patient, env.candidates, iso, labels)
    schema = gantry_reply_schema(options.beams, env.candidates)  # asked for; replies are accepted under:
    accepted = gantry_reply_schema(options.beams)
    system = gantry_system_prompt(
        options.beams, env.candidates, info["metrics"]["plan"]["score_max"], patient.patient_position
    )
    start_entry = _entry(info)
    seen, best_info, best_entry = [start_entry], info, start_entry
    history = [{**angle_record(None, 0.0, info), "llm": None}]
    stale, stop, dropped = 0, "", 0
    for iteration in range(1, options.iterations + 1):
        report(
            progress,
            (iteration - 1) / options.iterations,
            f"llm-gantry: iteration {iteration}, R {info['plan_reward']:.2f}",
        )
        views = (
            render_views(patient, env.plan_dose_ct_gy, info["angles_deg"], iso, labels, options.image_px)
            if options.images
            else []
        )
        names, images = [name for name, _ in views], [png for _, png in views]
        current = _entry(info)
        bare = gantry_user_prompt(
            iteration, options.iterations, current, [], info["metrics"], labels, paths, names
        )
        budget = options.llm_context_tokens - settings.max_tokens - estimated_tokens(system)
        if estimated_tokens(bare, len(images)) > budget:
            stop = (
                f"the prompt (≈{estimated_tokens(system + bare, len(images))} tokens without history) does "
                f"not fit the model's context of {options.llm_context_tokens} tokens with "
                f"{settings.max_tokens} for the reply; raise --llm-context or send no images"
            )
            break
        kept, cut = fit_history(seen, budget, bare, len(images))
        dropped = max(dropped, cut)
        text = gantry_user_prompt(
            iteration, options.iterations, current, kept, info["metrics"], labels, paths, names
        )
        record = _Iteration(estimated_tokens(system + text, len(images)), history_dropped=cut)
        messages = [Message("system", system), Message("user", text, tuple(images))]
        try:
            indices = _ask(client, messages, (schema, accepted), env.candidates, options.beams, record)
        except (LLMDryRunError, LLMError) as error:
            stop = str(error)
            history.append({"iteration": iteration, "llm": asdict(record), "stopped": stop})
            break
        if indices is None:  # invalid twice: keep the previous set
            history.append({"iteration": iteration, "llm": asdict(record), "kept_previous": True})
            stale += 1
        else:
            action = np.zeros(len(env.candidates), dtype=np.int8)
            action[indices] = 1
            _, reward, _, _, info = env.step(action)
            entry = _entry(info)
            seen.append(entry)
            history.append(
                {**angle_record(indices, reward, info), "iteration": iteration, "llm": asdict(record)}
            )
            if entry.reward > best_entry.reward + 1e-9:
                best_entry, best_info, stale = entry, info, 0
            else:
                stale += 1
            status = f"llm-gantry: iteration {iteration}, R {entry.reward:.2f}: {record.rationale[:120]}"
            report(progress, iteration / options.iterations, status)  # the panel's status line shows it
        if stale >= options.patience and iteration < options.iterations:
            stop = f"no improvement in {options.patience} iterations"
            break
    report(progress, 1.0, "llm-gantry: done")
    env.close()
    records = [h["llm"] for h in history[1:] if h.get("llm")]
    usage = run_usage(client, records, stop or f"{options.iterations} iterations")
    usage["history_entries_dropped"] = dropped  # the most left out of any one prompt
    return AgentResult(
        agent="llm-gantry",
        kind="angles",
        case=best_info["case"],
        angles_deg=tuple(best_info["angles_deg"]),
        tpps=None,
        reward=best_info["plan_reward"],
        score=best_info["score"],
        score_max=best_info["metrics"]["plan"]["score_max"],
        steps=len(seen) - 1,
        optimizer_calls=len(seen),
        wall_s=time.perf_counter() - start,
        history=history,
        options=options,
        note=f"best of {len(seen)} plans; {usage['stop_reason']}",
        metrics=best_info["metrics"],
        llm=usage,
    )


def _entry(info: dict[str, Any]) -> HistoryEntry:
    """The history entry of the plan an environment step (or reset) reports."""
    plan = info["metrics"]["plan"]
    return HistoryEntry(tuple(info["angles_deg"]), info["plan_reward"], info["score"], plan["score_max"])


def _ask(
    client: LLMClient,
    messages: list[Message],
    schemas: tuple[dict[str, Any], dict[str, Any]],
    candidates: tuple[float, ...],
    beams: int,
    record: _Iteration,
) -> list[int] | None:
    """The replied angle set as candidate indices; re-asked once with the error; None if still invalid.
    ``schemas``: the one sent, and the looser one a reply is validated under before snapping."""
    sent, accepted = schemas
    for attempt in range(2):
        reply = client.chat(messages, sent)
        record.reply = reply.text
        try:
            value = validated_reply(reply.text, accepted)
            indices, snaps = _angles_from_reply(value, candidates, beams)
        except ReplyError as error:
            record.error = str(error)
            if attempt == 0:
                record.re_asked = True
                messages = re_ask(messages, reply.text, error)
            continue
        record.valid, record.snapped, record.rationale = True, tuple(snaps), str(value["rationale"])
        record.error = ""
        return indices
    return None
