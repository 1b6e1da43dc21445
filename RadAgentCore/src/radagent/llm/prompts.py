"""Prompts for the LLM agents, built by pure functions from plain values, so that a test reads them
without a server. What a prompt may carry: renderings, numbers and role labels. Never patient names,
IDs, dates, file names, case descriptions or header fields; a structure's own name only when it is a
short plain word (``Rectum``, ``FemoralHead_L``), so that a name cannot carry instructions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radagent.evaluate.metrics import score_text

__all__ = [
    "STRUCTURE_WORDS",
    "BeamPath",
    "HistoryEntry",
    "TppEntry",
    "TppHistoryEntry",
    "fit_history",
    "gantry_reply_schema",
    "gantry_system_prompt",
    "gantry_user_prompt",
    "role_labels",
    "safe_name",
    "tpp_reply_schema",
    "tpp_system_prompt",
    "tpp_user_prompt",
]

_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,23}")
_NAME_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")  # PTV70 → PTV 70; FemoralHead → Femoral Head
# The words a structure name may be made of to reach a prompt (after TG-263's vocabulary, lower case):
# anatomy, target volumes, sides and common qualifiers. A name with any other word (a person's name, an
# ID, an instruction) is sent as its role label alone.
STRUCTURE_WORDS = frozenset(
    """
    ptv ctv gtv itv igtv target targets boost core outer inner ring shell avoid avoidance opt z tv
    body external skin patient outline nt normal tissue bladder rectum rectal anal anus canal
    sigmoid colon bowel bowels small large duodenum stomach prostate prostatic seminal vesicle
    vesicles sv urethra penile bulb penis testis testes uterus cervix vagina ovary ovaries femur
    femoral head heads neck hip pelvis pelvic bone bones marrow sacrum cord spinal brain brainstem
    stem cerebellum chiasm optic nerve nerves eye eyes globe lens retina cochlea cochleae parotid
    parotids submandibular gland glands oral cavity mandible larynx pharynx constrictor constrictors
    esophagus oesophagus trachea thyroid lip lips lung lungs heart pericardium breast breasts
    chestwall chest wall liver kidney kidneys spleen pancreas adrenal gallbladder aorta vessels
    great bronchus bronchi brachial plexus ribs rib left right lt rt l r bilat bilateral total
    combined sum minus and plus prv mm cm gy low high mid dose primary node nodes nodal ln n p
    """.split()  # noqa: SIM905 - a word list reads best as words
)
CHARS_PER_TOKEN = 4.0  # a rough English-text estimate, for the prompt budget
IMAGE_TOKENS = 800  # what one rendering is assumed to cost (vision models differ: 250–1500)


def safe_name(name: str, label: str) -> str:
    """``label (name)`` when the name is short, plain and made of structure words (``STRUCTURE_WORDS``,
    numbers of up to three digits), else the role label alone: a name cannot carry an identifier or an
    instruction into a prompt."""
    if not _PLAIN_NAME.fullmatch(name):
        return label
    words = _NAME_WORDS.findall(name)
    known = all(w.lower() in STRUCTURE_WORDS or (w.isdigit() and len(w) <= 3) for w in words)
    return f"{label} ({name})" if words and known else label


def role_labels(targets: Sequence[str], oars: Sequence[str]) -> dict[str, str]:
    """What the prompt calls each structure: ``target``/``target 1``…, ``OAR 1``…, with the plain names."""
    labels = {}
    for n, name in enumerate(targets, start=1):
        labels[name] = safe_name(name, "target" if len(targets) == 1 else f"target {n}")
    for n, name in enumerate(oars, start=1):
        labels[name] = safe_name(name, f"OAR {n}")
    return labels


@dataclass(frozen=True)
class BeamPath:
    """What a text-only model learns about one candidate angle: the central axis from the skin to the
    isocentre (mm of tissue, water-equivalent mm) and the OARs it crosses, with their distance from the
    target along the axis (entering before the target, exiting after it)."""

    angle_deg: float
    path_mm: float
    water_equivalent_mm: float
    crossings: tuple[tuple[str, str, float], ...]  # (label, "in"/"out", mm from the target)


@dataclass(frozen=True)
class HistoryEntry:
    """One plan the agent has seen: its angles, penalty reward R and score (of ``score_max``)."""

    angles_deg: tuple[float, ...]
    reward: float
    score: float | None
    score_max: float | None = None


def gantry_reply_schema(beams: int, candidates_deg: Sequence[float] | None = None) -> dict[str, Any]:
    """The JSON reply of the gantry agent: exactly ``beams`` angles in [0, 360) and a short rationale.
    With ``candidates_deg``, the schema to *send*: different angles from the candidates, which servers
    that constrain decoding to the schema (llama.cpp, Ollama) then enforce; without, the schema a reply is
    *accepted* under (an angle between candidates is snapped to the nearest one afterwards)."""
    angle: dict[str, Any] = {"type": "number", "minimum": 0, "exclusiveMaximum": 360}
    if candidates_deg is not None:
        angle = {"type": "number", "enum": [int(a) if float(a).is_integer() else a for a in candidates_deg]}
    return {
        "type": "object",
        "properties": {
            "gantry_angles": {
                "type": "array",
                "items": angle,
                "minItems": beams,
                "maxItems": beams,
                **({"uniqueItems": True} if candidates_deg is not None else {}),
            },
            "rationale": {"type": "string", "maxLength": 600},
        },
        "required": ["gantry_angles", "rationale"],
        "additionalProperties": False,
    }


_POSITION_WORDS = {
    "HFS": "head first, supine",
    "HFP": "head first, prone",
    "FFS": "feet first, supine",
    "FFP": "feet first, prone",
}
_SIDE_WORDS = {(0, 1): "right", (0, -1): "left", (1, 1): "anterior", (1, -1): "posterior"}


def gantry_directions(patient_position: str = "HFS") -> str:
    """Where beams at 0°, 90°, 180° and 270° enter this patient (IEC 61217 for the patient position):
    a text model must not assume head-first supine."""
    from radagent.beams import BeamGeometry

    sides = []
    for angle in (0.0, 90.0, 180.0, 270.0):
        source_side = -BeamGeometry(angle, (0.0, 0.0, 0.0), patient_position).direction_ras
        axis = int(np.argmax(np.abs(source_side[:2])))
        side = _SIDE_WORDS[(axis, int(np.sign(source_side[axis])))]
        sides.append(f"{angle:g}° = from the patient's {side}")
    position = _POSITION_WORDS.get(patient_position.upper(), patient_position)
    return f"IEC 61217; the patient lies {position}: {', '.join(sides)}"


def gantry_system_prompt(
    beams: int, candidates_deg: Sequence[float], score_max: float | None, patient_position: str = "HFS"
) -> str:
    """The role, what a planner knows about beam angles, the candidate grid and the reply format."""
    step = candidates_deg[1] - candidates_deg[0] if len(candidates_deg) > 1 else 360.0
    goal = (
        f"Each plan is scored by a clinical score card (the best: {score_text(score_max, score_max)}) and by "
        "a penalty reward R (0 is perfect, more negative is worse)."
        if score_max is not None
        else "Each plan is judged by a penalty reward R (0 is perfect, more negative is worse)."
    )
    return "\n".join(
        [
            f"You plan radiotherapy: choose {beams} gantry angles for a coplanar photon IMRT plan "
            f"({gantry_directions(patient_position)}).",
            "After each choice the fluence is optimized and normalized so that 95 % of the target gets the "
            "prescription; you see the result and choose again. " + goal,
            "What planners know: avoid beams that enter through an organ at risk (OAR) close to the target; "
            "opposed beams (180° apart) add little; a shorter or less dense path to the target means less "
            "dose on the way in; spread the beams around the patient unless an OAR forbids a direction.",
            f"Candidate angles: every {step:g}° from 0 to {candidates_deg[-1]:g}. Give {beams} different "
            "angles from them.",
            'Reply with one JSON object only: {"gantry_angles": [...], "rationale": "..."} with '
            f"exactly {beams} angles and a rationale of one or two sentences.",
        ]
    )


def gantry_user_prompt(
    iteration: int,
    iterations: int,
    current: HistoryEntry,
    history: Sequence[HistoryEntry],
    metrics: Mapping[str, Any],
    labels: Mapping[str, str],
    paths: Sequence[BeamPath] | None,
    image_names: Sequence[str] = (),
) -> str:
    """One iteration's question: the renderings (named) or, without images, every candidate's beam path;
    the metrics of the current plan; the current angles; the history, best first."""
    lines = [f"Iteration {iteration} of {iterations}."]
    if image_names:
        lines.append(
            f"The {len(image_names)} images show the current plan ({', '.join(image_names)} planes through "
            "the isocentre): CT, contours, beams as yellow lines, dose in % of the prescription."
        )
    if paths:
        lines.append("Beam paths of the candidate angles (skin to isocentre; OARs crossed, mm from target):")
        for path in paths:
            crossed = (
                ", ".join(f"{label} {side} at {mm:.0f} mm" for label, side, mm in path.crossings) or "none"
            )
            lines.append(
                f"  {path.angle_deg:g}°: {path.path_mm:.0f} mm tissue, {path.water_equivalent_mm:.0f} mm "
                f"water-equivalent; crosses {crossed}"
            )
    lines.append("Current plan: " + _entry_text(current))
    lines += _metrics_lines(metrics, labels)
    if history:
        lines.append("Plans so far, best first:")
        lines += [f"  {_entry_text(entry)}" for entry in history]
    lines.append("Choose the next angles (JSON only).")
    return "\n".join(lines)


def _entry_text(entry: HistoryEntry) -> str:
    angles = ", ".join(f"{a:g}" for a in entry.angles_deg)
    return f"angles [{angles}] → R {entry.reward:.2f}, {score_text(entry.score, entry.score_max)}"


def _metrics_lines(metrics: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """Each labelled structure's dose endpoints, then the score card's rows (value and sub-score)."""
    lines = ["Dose (Gy): structure | mean | D2 | D50 | D95"]
    for name, values in metrics["structures"].items():
        if name in labels:
            lines.append(
                f"  {labels[name]} | {values['mean_gy']:.1f} | {values['d2_gy']:.1f} | "
                f"{values['d50_gy']:.1f} | {values['d95_gy']:.1f}"
            )
    criteria = metrics["plan"].get("criteria") or []
    if criteria:
        lines.append("Score card: criterion | value | sub-score (of 1)")
        for row in criteria:
            structure = labels.get(row["structure"], "structure")
            label = row["label"].replace(row["structure"], structure)
            lines.append(f"  {label} | {row['value']:.3f} | {row['subscore']:.2f}")
    return lines


def estimated_tokens(text: str, images: int = 0) -> int:
    """A prompt's size in tokens, estimated (text by characters, images at a fixed cost)."""
    return int(len(text) / CHARS_PER_TOKEN) + images * IMAGE_TOKENS


def fit_history(
    history: Sequence[HistoryEntry], budget_tokens: int, prompt_without_history: str, images: int
) -> tuple[list[HistoryEntry], int]:
    """The history (best first) cut to the token budget: the oldest entries that are not the best go
    first. Returns the kept entries and how many were dropped."""
    ordered = sorted(history, key=lambda e: -e.reward)
    kept = list(history)  # in time order, oldest first
    dropped = 0
    while kept:
        text = prompt_without_history + "\n".join(_entry_text(e) for e in kept)
        if estimated_tokens(text, images) <= budget_tokens:
            break
        best = ordered[0]
        victim = next((e for e in kept if e is not best), None)
        if victim is None:
            break
        kept.remove(victim)
        dropped += 1
    return sorted(kept, key=lambda e: -e.reward), dropped


# ---------------------------------------------------------------------------------------------------
# TPP tuning (llm-tpp, m2m): the LLM proposes planning parameters by role, the environment plans them


@dataclass(frozen=True)
class TppEntry:
    """One TPP as the prompt names it (``t_target``, ``lambda_OAR1``…), its value and its bounds."""

    name: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class TppHistoryEntry:
    """One plan the agent has seen: its TPPs by prompt name and its score."""

    iteration: int
    tpps: tuple[tuple[str, float], ...]
    score: float
    score_max: float


def tpp_reply_schema(names: Sequence[str] | None = None) -> dict[str, Any]:
    """The reply ``{"tpp": {NAME: value, …}, "rationale": "…"}`` (a partial update is allowed). With
    ``names``, the schema to *send* (servers that constrain decoding then keep to these names); without,
    the looser schema a reply is *accepted* under, so that unknown names can be reported back."""
    if names is None:  # accepted: any names and values (checked afterwards), any rationale length
        return {
            "type": "object",
            "properties": {"tpp": {"type": "object"}, "rationale": {"type": "string"}},
            "required": ["tpp", "rationale"],
        }
    values = {
        "type": "object",
        "properties": {name: {"type": "number"} for name in names},
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"tpp": values, "rationale": {"type": "string", "maxLength": 600}},
        "required": ["tpp", "rationale"],
        "additionalProperties": False,
    }


def tpp_system_prompt(score_max: float, oar_count: int, guidance_source: str | None = None) -> str:
    """The role, what the TPPs do (METHOD §3), the goal and the reply format."""
    oars = ", ".join(f"OAR{k}" for k in range(1, oar_count + 1))
    lines = [
        "You tune the treatment planning parameters (TPPs) of a radiotherapy IMRT fluence optimizer. "
        f"Structures: the target and the organs at risk {oars} (OAR1 is the nearest to the target).",
        "Per structure s there are three TPPs: t_s, a dose threshold as a fraction of the prescription; "
        "lambda_s, a priority weight (only lambda_s / lambda_target matters); V_s, a volume fraction. The "
        "optimizer pushes the hottest V_s of s down towards t_s × prescription with weight lambda_s / "
        "lambda_target, and always keeps the target covered; the plan is then normalized so that 95 % of "
        "the target gets the prescription.",
        "Lower t or higher lambda or V on an OAR spares it more, at a cost to the target's homogeneity "
        "and to the other OARs.",
        f"A score card scores each plan; the best is {score_text(score_max, score_max)}. Reach it in as "
        "few iterations as you can.",
    ]
    if guidance_source is not None:
        lines.append(
            "You also get guidance distilled from a reinforcement-learning agent that tuned these TPPs "
            f"successfully on many {guidance_source} plans: treat it as priors, not limits."
        )
    lines.append(
        'Reply with one JSON object only: {"tpp": {"NAME": value, ...}, "rationale": "..."}. Give only the '
        "TPPs you change (the others keep their values), use the names shown, and a rationale of one or "
        "two sentences."
    )
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4g}"


def tpp_user_prompt(
    iteration: int,
    iterations: int,
    score: float,
    score_max: float,
    criteria: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
    dvh: Mapping[str, Sequence[float]],
    dvh_levels: Sequence[float],
    tpps: Sequence[TppEntry],
    history: Sequence[TppHistoryEntry],
    guidance: Sequence[str] = (),
    mapping: Sequence[str] = (),
) -> str:
    """One iteration's question: the score card (value, thresholds, sub-score), total score, a compact DVH,
    the current TPPs with bounds, the recent history and, for the guided agent, the guidance block."""
    lines = [f"Iteration {iteration} of {iterations}. Current plan: {score_text(score, score_max)}."]
    if mapping:
        lines.append("Structures: " + "; ".join(mapping))
    lines.append("Score card: criterion | value | full credit at | zero credit at | sub-score (of 1)")
    for row in criteria:
        structure = labels.get(row["structure"], "structure")
        label = row["label"].replace(row["structure"], structure)
        lines.append(
            f"  {label} | {row['value']:.3f} | {row['full_credit']:g} | {row['zero_credit']:g} | "
            f"{row['subscore']:.2f}"
        )
    levels = " ".join(f"{level:g}" for level in dvh_levels)
    lines.append(f"DVH: % volume receiving at least these fractions of the prescription: {levels}")
    for name, volumes in dvh.items():
        lines.append(f"  {labels.get(name, 'structure')}: " + " ".join(f"{v:.0f}" for v in volumes))
    lines.append("Current TPPs (name = value [bounds]):")
    lines += [f"  {e.name} = {_number(e.value)} [{_number(e.low)}, {_number(e.high)}]" for e in tpps]
    if history:
        lines.append("Recent plans (iteration: changed TPPs → score):")
        for entry in history:
            changed = ", ".join(f"{n}={_number(v)}" for n, v in entry.tpps)
            changed = changed or ("start" if entry.iteration == 0 else "no change")
            lines.append(f"  {entry.iteration}: {changed} → {score_text(entry.score, entry.score_max)}")
    if guidance:
        lines.append("Guidance (priors from a trained agent, not limits):")
        lines += [f"  {line}" for line in guidance]
    lines.append("Reply with the TPPs to change (JSON only).")
    return "\n".join(lines)
