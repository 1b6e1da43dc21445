"""Knowledge cards (METHOD §5, M2M): what a trained TPP agent knows, as statistics an LLM can read.

:func:`build_card` runs a trained TPP agent (``dqn-tpp``) on training variants only, from the default
start and from random starts, greedily and ε-greedily over several seeds, and keeps the final TPPs of
its successful episodes. Everything is stated by **role**, so that it carries to other sites: the
target, and the scored OARs ranked by their minimum surface distance to the target (``OAR1`` the
nearest). Units are role-normalized: t as a fraction of p, λ relative to the target's λ (the objective
depends on λₛ/λ_PTV only), V as a fraction.

The card is versioned JSON (deterministic: same inputs, same bytes) with a Markdown rendering; the
card built from the shipped agent ships with the package (``radagent/agents/cards``). Reading a
card (:func:`read_card`) needs no torch; building one does.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from radagent import RESEARCH_USE_ONLY
from radagent.agents.checkpoint import TPP_DQN
from radagent.agents.learned import load_trained, trained_setting
from radagent.envs import TPPConfig, TPPEnv
from radagent.errors import InputError
from radagent.evaluate.metrics import score_text
from radagent.io.atomic import write_text_atomic
from radagent.patient import Case
from radagent.progress import ProgressCallback, report

__all__ = [
    "CARD_FORMAT",
    "CARD_VERSION",
    "SHIPPED_CARD",
    "CardSettings",
    "KnowledgeCard",
    "RoleMapping",
    "StartSpec",
    "build_card",
    "card_markdown",
    "oar_proximity",
    "parse_starts",
    "read_card",
    "role_entry_names",
    "write_card",
]

CARD_FORMAT = "radagent-knowledge-card"
CARD_VERSION = 1
SHIPPED_CARD = "dqn-tpp-prostate.json"  # under radagent/agents/cards
HISTOGRAM_BINS = 10
_DIGITS = 6  # significant digits of every number a card stores (so that a rebuild gives the same bytes)
_KINDS = ("t", "lambda", "V")


@dataclass(frozen=True)
class StartSpec:
    """Where episodes start: the sources' default TPPs, or ``count`` random (seeded) TPP vectors."""

    kind: str  # "default" or "random"
    count: int = 1

    def __str__(self) -> str:
        return "default" if self.kind == "default" else f"random:{self.count}"


def parse_starts(texts: Sequence[str]) -> tuple[StartSpec, ...]:
    """``["default", "random:3"]`` → start specs; anything else is an InputError naming the text."""
    starts = []
    for text in texts:
        kind, _, count = text.strip().partition(":")
        if kind == "default" and not count:
            starts.append(StartSpec("default"))
        elif kind == "random":
            try:
                number = int(count) if count else 1
            except ValueError:
                number = 0
            if number < 1:
                raise InputError(f"start {text!r}: random starts need a positive count, e.g. random:3")
            starts.append(StartSpec("random", number))
        else:
            raise InputError(f"start {text!r} is not 'default' or 'random:N'")
    if not starts:
        raise InputError("give at least one start (default, random:N)")
    kinds = [s.kind for s in starts]
    if len(set(kinds)) != len(kinds):
        raise InputError(f"each start kind may be given once, got {', '.join(texts)}")
    return tuple(starts)


def oar_proximity(case: Case, target: str, oars: Sequence[str]) -> list[tuple[str, float]]:
    """The OARs ordered by minimum distance to the target (mm, between voxel centres: 0 when they
    overlap, about one voxel spacing when they only touch), nearest first; ties broken by the mean
    distance, then the name."""
    target_mask = case.structure(target).mask
    spacing = tuple(float(s) for s in case.grid.spacing_mm[::-1])  # (k, j, i) axes
    distance = ndimage.distance_transform_edt(~target_mask, sampling=spacing)
    ranked = []
    for name in oars:
        values = distance[case.structure(name).mask]
        if values.size == 0:
            raise InputError(f"organ at risk '{name}' is empty")
        ranked.append((float(values.min()), float(values.mean()), name))
    ranked.sort()
    return [(name, round(minimum, 3)) for minimum, _, name in ranked]


def role_entry_names(oar_count: int) -> list[str]:
    """The role-normalized entries a card describes: t_target, V_target, then t/lambda/V of OAR1…N
    (λ_target is the unit of the other λ, so it has no entry of its own)."""
    names = ["t_target", "V_target"]
    for rank in range(1, oar_count + 1):
        names += [f"t_OAR{rank}", f"lambda_OAR{rank}", f"V_OAR{rank}"]
    return names


def _role_values(tpps: Mapping[str, float], ranked_oars: Sequence[str]) -> dict[str, float]:
    """A TPP dictionary (entry names with the case's structure names) in role-normalized units."""
    target_lambda = tpps["lambda_PTV"]
    values = {"t_target": tpps["t_PTV"], "V_target": tpps["V_PTV"]}
    for rank, name in enumerate(ranked_oars, start=1):
        values[f"t_OAR{rank}"] = tpps[f"t_{name}"]
        values[f"lambda_OAR{rank}"] = tpps[f"lambda_{name}"] / target_lambda
        values[f"V_OAR{rank}"] = tpps[f"V_{name}"]
    return values


def _role_of_entry(entry: str, ranked_oars: Sequence[str]) -> str:
    """``lambda_Rectum`` → ``lambda_OAR1`` (when the rectum is the nearest OAR); ``t_PTV`` → ``t_target``."""
    kind, _, structure = entry.partition("_")
    if structure == "PTV":
        return f"{kind}_target"
    return f"{kind}_OAR{list(ranked_oars).index(structure) + 1}"


def _round(value: float) -> float:
    """``value`` to the card's significant digits."""
    if not math.isfinite(value) or value == 0:
        return float(value)
    return float(f"{value:.{_DIGITS}g}")


def _histogram_edges(entry: str, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Bin edges over the entry's bounds (t, V) or, for relative λ, log-spaced over the observed range."""
    kind, _, role = entry.partition("_")
    if kind == "lambda":
        low, high = float(values.min()), float(values.max())
        if high <= low * (1 + 1e-9):
            low, high = low / 1.5, high * 1.5
        return np.geomspace(low, high, HISTOGRAM_BINS + 1), "log"
    bounds = {
        ("t", True): (1.0, 1.2),
        ("t", False): (0.0, 1.0),
        ("V", True): (0.0, 0.3),
        ("V", False): (0.0, 1.0),
    }[(kind, role == "target")]
    return np.linspace(*bounds, HISTOGRAM_BINS + 1), "linear"


def _value_statistics(entry: str, values: np.ndarray) -> dict[str, Any]:
    """Percentiles, mean ± sd and a 10-bin histogram with its normalized entropy."""
    edges, scale = _histogram_edges(entry, values)
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    shares = counts[counts > 0] / counts.sum()
    entropy = max(0.0, float(-np.sum(shares * np.log(shares)) / math.log(HISTOGRAM_BINS)))
    percentiles = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "n": int(values.size),
        "min": _round(float(values.min())),
        "p5": _round(float(percentiles[0])),
        "p25": _round(float(percentiles[1])),
        "median": _round(float(percentiles[2])),
        "p75": _round(float(percentiles[3])),
        "p95": _round(float(percentiles[4])),
        "max": _round(float(values.max())),
        "mean": _round(float(values.mean())),
        "sd": _round(float(values.std(ddof=1))) if values.size > 1 else 0.0,
        "histogram": {
            "scale": scale,
            "edges": [_round(float(e)) for e in edges],
            "counts": [int(c) for c in counts],
        },
        "entropy": _round(entropy),
    }


@dataclass(frozen=True)
class CardSettings:
    """What a card is built from: the trained agent, the training case and variants, the starts, and
    how episodes run (ε-greedy over ``epsilon_seeds`` seeds besides the greedy one)."""

    checkpoint: str | None = None  # a checkpoint folder; None: the shipped dqn-tpp
    case: str = "prostate"
    variants: tuple[int, ...] = tuple(range(30))
    starts: tuple[StartSpec, ...] = (StartSpec("default"), StartSpec("random", 1))
    epsilon: float = 0.05
    epsilon_seeds: int = 4
    min_score: float | None = None  # an episode succeeds at this score or above; None: the card's maximum
    max_steps: int = 20

    def __post_init__(self) -> None:
        if not self.variants:
            raise InputError("a knowledge card needs at least one training variant")
        if not 0.0 <= self.epsilon <= 1.0:
            raise InputError(f"ε must lie in [0, 1], got {self.epsilon}")
        if self.epsilon_seeds < 0 or self.max_steps < 1:
            raise InputError("ε seeds must be ≥ 0 and max steps ≥ 1")

    def command(self) -> str:
        """The ``radagent knowledge build`` command line that builds this card."""
        parts = ["radagent knowledge build"]
        if self.checkpoint is not None:
            parts.append(f"--checkpoint {self.checkpoint}")
        parts.append(f"--case {self.case} --variants {_ranges_text(self.variants)}")
        parts += [f"--start {s}" for s in self.starts]
        parts.append(f"--epsilon {self.epsilon:g} --epsilon-seeds {self.epsilon_seeds}")
        if self.min_score is not None:
            parts.append(f"--min-score {self.min_score:g}")
        if self.max_steps != 20:
            parts.append(f"--max-steps {self.max_steps}")
        return " ".join(parts)


def _ranges_text(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` → ``0-2,5``."""
    ordered, parts = sorted(values), []
    start = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


@dataclass
class _Episode:
    """One episode of the trained agent: where it started, how it went, where it ended."""

    variant: int
    start: str
    policy: str  # "greedy" or "epsilon"
    ranked_oars: tuple[str, ...]
    success: bool
    steps: int
    final_tpps: dict[str, float]
    actions: list[tuple[str, int]]  # (role entry, +1 up / −1 down) per step
    transitions: list[tuple[str, float, dict[str, float]]]  # (action label, Δscore, Δ criterion values)


def _criteria_values(info: dict[str, Any], labels: Mapping[str, str]) -> dict[str, float]:
    """Each criterion's value, keyed by its label with the structure named by role."""
    values = {}
    for row in info["metrics"]["plan"]["criteria"]:
        label = row["label"].replace(row["structure"], labels.get(row["structure"], "structure"))
        values[label] = float(row["value"])
    return values


def _run_episodes(
    settings: CardSettings, progress: ProgressCallback | None
) -> tuple[list[_Episode], dict[str, Any], float]:
    """Every episode the settings ask for, variant by variant; also the checkpoint's description and the
    card's maximum score."""
    dqn, checkpoint = load_trained(TPP_DQN, settings.checkpoint)
    threads = dqn.torch.get_num_threads()
    dqn.torch.set_num_threads(1)  # the same Q-values, hence the same greedy actions, on every machine
    try:
        return _episodes_of(settings, progress, dqn, checkpoint)
    finally:
        dqn.torch.set_num_threads(threads)


def _episodes_of(
    settings: CardSettings, progress: ProgressCallback | None, dqn: Any, checkpoint: Any
) -> tuple[list[_Episode], dict[str, Any], float]:
    """:func:`_run_episodes` with the checkpoint loaded."""
    device = dqn.torch.device("cpu")
    record = checkpoint.record
    include_tpps = trained_setting(record, "include_tpps", False)
    plans = [
        (start, index, policy, seed)
        for start in settings.starts
        for index in range(start.count)
        for policy, seed in [("greedy", 0)] + [("epsilon", k) for k in range(1, settings.epsilon_seeds + 1)]
    ]
    total = len(settings.variants) * len(plans)
    episodes: list[_Episode] = []
    score_max = 0.0
    for v_index, variant in enumerate(settings.variants):
        envs = {}
        for start in settings.starts:
            config = TPPConfig(start=start.kind, max_steps=settings.max_steps, include_tpps=include_tpps)
            envs[start.kind] = TPPEnv(settings.case, variants=[variant], config=config)
            checkpoint.check(envs[start.kind])
        first = envs[settings.starts[0].kind]
        case = first.source.case(variant)
        ranked = tuple(name for name, _ in oar_proximity(case, first.roles.target, first.roles.oars))
        labels = {first.roles.target: "target"} | {n: f"OAR{r}" for r, n in enumerate(ranked, start=1)}
        for p_index, (start, index, policy, seed) in enumerate(plans):
            done_share = (v_index * len(plans) + p_index) / total
            message = f"knowledge: variant {variant}, {start.kind} start {index}, {policy}"
            report(progress, done_share, message)
            env = envs[start.kind]
            rng = np.random.default_rng([variant, index, seed])
            obs, info = env.reset(seed=1000 * index + variant)  # each variant its own random starts
            score_max = float(info["score_max"])
            threshold = settings.min_score if settings.min_score is not None else score_max
            actions, transitions = [], []
            done = info["score"] >= threshold - 1e-9
            while not done:
                mask = env.action_masks()
                if policy == "epsilon" and rng.random() < settings.epsilon:
                    action = int(rng.choice(np.flatnonzero(mask)))
                else:
                    action = dqn.greedy_action(checkpoint.network, obs, mask, device)
                entry, direction = divmod(action, 2)
                role = _role_of_entry(env.tpps.names[entry], ranked)
                step = 1 if env.factors[entry, direction] > 1 else -1
                before_score, before = info["score"], _criteria_values(info, labels)
                obs, _, terminated, truncated, info = env.step(action)
                after = _criteria_values(info, labels)
                label = f"{role} {'up' if step > 0 else 'down'}"
                deltas = {k: after[k] - before[k] for k in before}
                transitions.append((label, info["score"] - before_score, deltas))
                actions.append((role, step))
                done = terminated or truncated or info["score"] >= threshold - 1e-9
            episodes.append(
                _Episode(
                    variant,
                    start.kind,
                    policy,
                    ranked,
                    bool(info["score"] >= threshold - 1e-9),
                    len(actions),
                    dict(env.tpps.to_dict()),
                    actions,
                    transitions,
                )
            )
        for env in envs.values():
            env.close()
    report(progress, 1.0, "knowledge: episodes done")
    source = {
        "agent": "dqn-tpp",
        "checkpoint": Path(checkpoint.path).name,
        "env_id": record["env_spec"]["strict"].get("id", "RadAgent/TPP-v1"),
        "trained_on": {k: record.get("training", {}).get(k) for k in ("case", "variants", "step")},
    }
    return episodes, source, score_max


def run_card_episodes(settings: CardSettings, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the trained agent as ``settings`` say: every episode, as plain values (what
    :func:`build_card` distills; saved, it lets a card be re-derived without running the agent again)."""
    started = time.perf_counter()
    episodes, source, score_max = _run_episodes(settings, progress)
    return {
        "format": "radagent-knowledge-episodes",
        "settings": {"command": settings.command()},
        "source": source,
        "score_max": score_max,
        "seconds": round(time.perf_counter() - started, 1),
        "episodes": [asdict(e) for e in episodes],
    }


def build_card(
    settings: CardSettings, progress: ProgressCallback | None = None, episodes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Distill the successful episodes of the trained agent into a card; runs them unless ``episodes``
    (from :func:`run_card_episodes` with the same settings) are given."""
    if episodes is None:
        episodes = run_card_episodes(settings, progress)
    elif episodes.get("settings", {}).get("command") != settings.command():
        raise InputError("the saved episodes were run with other settings: " + str(episodes.get("settings")))
    return _distill(settings, episodes)


def _distill(settings: CardSettings, run: dict[str, Any]) -> dict[str, Any]:
    """The card of a run of episodes."""
    source, score_max = run["source"], float(run["score_max"])
    episodes = [
        _Episode(
            **{
                **e,
                "ranked_oars": tuple(e["ranked_oars"]),
                "actions": [tuple(a) for a in e["actions"]],
                "transitions": [tuple(t) for t in e["transitions"]],
            }
        )
        for e in run["episodes"]
    ]
    successes = [e for e in episodes if e.success]
    if not successes:
        raise InputError(
            f"none of the {len(episodes)} episodes reached the success score; lower --min-score or add starts"
        )
    oar_count = len(successes[0].ranked_oars)
    entries = role_entry_names(oar_count)
    finals = [_role_values(e.final_tpps, e.ranked_oars) for e in successes]
    values = {name: np.array([f[name] for f in finals]) for name in entries}
    pooled = {
        kind: np.concatenate([values[f"{kind}_OAR{r}"] for r in range(1, oar_count + 1)]) for kind in _KINDS
    }
    card = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "notice": RESEARCH_USE_ONLY,
        "command": settings.command(),
        "source": {
            **source,
            "case": settings.case,
            "variants": list(settings.variants),
            "starts": [str(s) for s in settings.starts],
            "epsilon": settings.epsilon,
            "epsilon_seeds": settings.epsilon_seeds,
            "max_steps": settings.max_steps,
            "score_max": _round(score_max),
            "success_score": _round(settings.min_score if settings.min_score is not None else score_max),
        },
        "units": {
            "t": "fraction of the prescription",
            "lambda": "relative to the target's lambda (the objective depends on the ratio only)",
            "V": "volume fraction",
        },
        "episodes": _episode_counts(episodes, settings),
        "roles": _role_names(successes, oar_count),
        "tpps": {name: _value_statistics(name, values[name]) for name in entries},
        "pooled_oar": {kind: _value_statistics(f"{kind}_OAR", pooled[kind]) for kind in _KINDS},
        "changes": _change_statistics(successes, oar_count),
        "effects": _effects(episodes),
    }
    card["priority"] = [
        name for name, _ in sorted(card["changes"].items(), key=lambda item: _priority_key(item[1]))
    ]
    return card


def _priority_key(change: dict[str, Any]) -> tuple[float, float]:
    """The earliest expected first change first (an episode that left the TPP alone counts as changing
    it after its last step, so a rarely changed TPP does not rank high); among equals, the more often
    changed."""
    return (change["priority_step"], -change["changed_fraction"])


def _episode_counts(episodes: Sequence[_Episode], settings: CardSettings) -> dict[str, Any]:
    """Episodes and successes per start kind and policy: what each start contributed."""
    counts: dict[str, Any] = {"total": len(episodes), "successful": sum(e.success for e in episodes)}
    for start in settings.starts:
        mine = [e for e in episodes if e.start == start.kind]
        counts[start.kind] = {
            "episodes": len(mine),
            "successful": sum(e.success for e in mine),
            "successful_greedy": sum(e.success for e in mine if e.policy == "greedy"),
            "successful_epsilon": sum(e.success for e in mine if e.policy == "epsilon"),
            "mean_steps_of_successful": _round(float(np.mean([e.steps for e in mine if e.success])))
            if any(e.success for e in mine)
            else None,
        }
    return counts


def _role_names(successes: Sequence[_Episode], oar_count: int) -> dict[str, dict[str, int]]:
    """Which structure each OAR rank was, in how many successful episodes."""
    roles: dict[str, dict[str, int]] = {}
    for rank in range(1, oar_count + 1):
        names: dict[str, int] = {}
        for episode in successes:
            name = episode.ranked_oars[rank - 1]
            names[name] = names.get(name, 0) + 1
        roles[f"OAR{rank}"] = dict(sorted(names.items()))
    return roles


def _change_statistics(successes: Sequence[_Episode], oar_count: int) -> dict[str, dict[str, Any]]:
    """Per raw TPP role (λ_target included): how often the agent changed it, how early, which way."""
    roles = ["t_target", "lambda_target", "V_target"]
    for rank in range(1, oar_count + 1):
        roles += [f"t_OAR{rank}", f"lambda_OAR{rank}", f"V_OAR{rank}"]
    changes = {}
    for role in roles:
        firsts, expected, ups, downs = [], [], 0, 0
        for episode in successes:
            steps = [n for n, (r, _) in enumerate(episode.actions, start=1) if r == role]
            if steps:
                firsts.append(steps[0])
            expected.append(steps[0] if steps else episode.steps + 1)  # unchanged: after the episode
            ups += sum(1 for r, d in episode.actions if r == role and d > 0)
            downs += sum(1 for r, d in episode.actions if r == role and d < 0)
        changes[role] = {
            "changed_fraction": _round(len(firsts) / len(successes)),
            "mean_first_step": _round(float(np.mean(firsts))) if firsts else None,
            "priority_step": _round(float(np.mean(expected))),  # unchanged episodes count as length + 1
            "steps_up": ups,
            "steps_down": downs,
            "direction": "up" if ups > downs else "down" if downs > ups else ("none" if not ups else "both"),
        }
    return changes


def _effects(episodes: Sequence[_Episode]) -> list[dict[str, Any]]:
    """Cause → effect over every step of every episode: per action, how often it was taken and the mean
    change of the score and of each criterion's value."""
    grouped: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for episode in episodes:
        for label, score_change, deltas in episode.transitions:
            grouped.setdefault(label, []).append((score_change, deltas))
    rows = []
    for label in sorted(grouped):
        items = grouped[label]
        criteria = sorted({k for _, d in items for k in d})
        rows.append(
            {
                "action": label,
                "count": len(items),
                "mean_score_change": _round(float(np.mean([s for s, _ in items]))),
                "mean_criterion_change": {
                    k: _round(float(np.mean([d[k] for _, d in items if k in d]))) for k in criteria
                },
            }
        )
    return rows


def write_card(card: Mapping[str, Any], path: str | Path) -> Path:
    """Write the card as JSON and its Markdown rendering beside it (``.md``), each atomically; returns
    the Markdown path."""
    path = Path(path)
    write_text_atomic(path, json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    markdown = path.with_suffix(".md")
    write_text_atomic(markdown, card_markdown(card))
    return markdown


@dataclass(frozen=True)
class RoleMapping:
    """How a case's scored OARs take a card's statistics: ``entries[oar name]`` is the card's OAR key
    (``OAR1``…) of the same proximity rank, or ``pooled`` beyond the card's ranks."""

    target: str
    oars: tuple[tuple[str, float, str], ...]  # (name, minimum distance to the target in mm, card key)

    def lines(self, labels: Mapping[str, str]) -> list[str]:
        """One line per OAR: its label, distance rank and the card entry it takes."""
        return [
            f"{labels.get(name, name)}: proximity rank {rank} ({distance:.0f} mm from the target) → "
            + ("the card's pooled OAR statistics" if key == "pooled" else f"the card's {key}")
            for rank, (name, distance, key) in enumerate(self.oars, start=1)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (recorded in plan.json)."""
        return {
            "target": self.target,
            "oars": [{"name": n, "min_distance_mm": d, "card_entry": k} for n, d, k in self.oars],
        }


class KnowledgeCard:
    """A read, validated knowledge card; its statistics by role, mapped onto a case's structures."""

    def __init__(self, data: dict[str, Any], path: Path | None = None, sha256: str | None = None) -> None:
        if data.get("format") != CARD_FORMAT:
            raise InputError(f"{path or 'the card'} is not a RadAgent knowledge card")
        if data.get("version") != CARD_VERSION:
            raise InputError(
                f"knowledge card version {data.get('version')} is not supported (this RadAgent reads "
                f"version {CARD_VERSION}); rebuild it with `radagent knowledge build`"
            )
        for key in ("tpps", "pooled_oar", "changes", "priority", "episodes", "source"):
            if key not in data:
                raise InputError(f"knowledge card {path or ''} lacks '{key}'")
        self.data = data
        self.path = path
        self.sha256 = sha256

    def provenance(self) -> dict[str, Any]:
        """What identifies the card in a plan's record: file name, SHA-256, the command that built it and
        the agent and case it comes from."""
        source = self.data["source"]
        return {
            "card": self.path.name if self.path is not None else None,
            "sha256": self.sha256,
            "command": self.data.get("command"),
            "source": f"{source.get('agent')} on {source.get('case')} {_ranges_text(source['variants'])}",
        }

    @property
    def oar_count(self) -> int:
        """How many OAR ranks the card has statistics for."""
        return sum(1 for name in self.data["tpps"] if name.startswith("t_OAR"))

    def mapping(self, case: Case, target: str, oars: Sequence[str]) -> RoleMapping:
        """The case's scored OARs by proximity rank, each with the card entry it takes."""
        ranked = oar_proximity(case, target, oars)
        return RoleMapping(
            target,
            tuple(
                (name, distance, f"OAR{rank}" if rank <= self.oar_count else "pooled")
                for rank, (name, distance) in enumerate(ranked, start=1)
            ),
        )

    def statistics(self, kind: str, card_key: str) -> dict[str, Any]:
        """The statistics of ``kind`` (t, lambda, V) for ``target``, a card OAR key or ``pooled``."""
        if card_key == "pooled":
            return self.data["pooled_oar"][kind]
        return self.data["tpps"][f"{kind}_{card_key}"]

    def change(self, kind: str, card_key: str) -> dict[str, Any] | None:
        """How the agent changed that TPP (None for pooled OARs: changes are per rank)."""
        return None if card_key == "pooled" else self.data["changes"].get(f"{kind}_{card_key}")

    def medians(self, mapping: RoleMapping, oar_names: Sequence[str]) -> dict[str, float]:
        """The card's median TPPs for this case (entry names with its structure names; λ_target = 1)."""
        keys = {name: key for name, _, key in mapping.oars}
        values = {
            "t_PTV": self.statistics("t", "target")["median"],
            "lambda_PTV": 1.0,
            "V_PTV": self.statistics("V", "target")["median"],
        }
        for name in oar_names:
            for kind in _KINDS:
                values[f"{kind}_{name}"] = self.statistics(kind, keys[name])["median"]
        return values


def read_card(path: str | Path | None = None) -> KnowledgeCard:
    """A knowledge card from ``path``; None: the card shipped with the package."""
    if path is None:
        path = Path(str(files("radagent.agents").joinpath("cards", SHIPPED_CARD)))
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise InputError(f"knowledge card {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"knowledge card {path} cannot be read: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"knowledge card {path} is not a JSON object")
    return KnowledgeCard(data, path, hashlib.sha256(raw).hexdigest())


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.3g}"


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown: source, what each start contributed, per-TPP statistics, priorities, effects."""
    source, counts = card["source"], card["episodes"]
    lines = [
        "# Knowledge card: what the trained TPP agent learned",
        "",
        f"*{card['notice']}*",
        "",
        f"Built with `{card['command']}` from agent {source['agent']} ({source['checkpoint']}, "
        f"{source['env_id']}) on {source['case']} variants {_ranges_text(source['variants'])}. An episode is "
        f"successful at {score_text(source['success_score'], source['score_max'])} or more.",
        "",
        f"Units: t {card['units']['t']}; λ {card['units']['lambda']}; V {card['units']['V']}.",
        "",
        "## Episodes",
        "",
        "| start | episodes | successful | of them greedy | of them ε-greedy | mean steps (successful) |",
        "|---|---|---|---|---|---|",
    ]
    for start in source["starts"]:
        kind = start.partition(":")[0]
        row = counts[kind]
        lines.append(
            f"| {start} | {row['episodes']} | {row['successful']} | {row['successful_greedy']} | "
            f"{row['successful_epsilon']} | {_number(row['mean_steps_of_successful'])} |"
        )
    lines += [f"| total | {counts['total']} | {counts['successful']} | | | |", "", "## Roles", ""]
    lines += [
        f"- {rank}: " + ", ".join(f"{name} ({n})" for name, n in names.items())
        for rank, names in card["roles"].items()
    ]
    lines += [
        "",
        "## Final TPPs of successful episodes",
        "",
        "| TPP | min | P5 | P25 | median | P75 | P95 | max | mean ± sd | entropy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [*card["tpps"].items(), *((f"{k}_OAR (pooled)", v) for k, v in card["pooled_oar"].items())]
    for name, s in rows:
        lines.append(
            f"| {name} | {_number(s['min'])} | {_number(s['p5'])} | {_number(s['p25'])} | "
            f"{_number(s['median'])} | {_number(s['p75'])} | {_number(s['p95'])} | {_number(s['max'])} | "
            f"{_number(s['mean'])} ± {_number(s['sd'])} | {_number(s['entropy'])} |"
        )
    lines += [
        "",
        "## How the agent changed them (priority order: earliest first)",
        "",
        "| TPP | changed in | mean first step (when changed) | expected first step | steps up | steps down |",
        "|---|---|---|---|---|---|",
    ]
    for name in card["priority"]:
        c = card["changes"][name]
        lines.append(
            f"| {name} | {c['changed_fraction']:.0%} | {_number(c['mean_first_step'])} | "
            f"{_number(c['priority_step'])} | {c['steps_up']} | {c['steps_down']} |"
        )
    lines += ["", "## Cause → effect (every step of every episode)", ""]
    lines += ["| action | count | mean Δscore | mean Δ of each criterion's value |", "|---|---|---|---|"]
    for row in card["effects"]:
        effects = "; ".join(f"{k} {v:+.3g}" for k, v in row["mean_criterion_change"].items())
        lines.append(f"| {row['action']} | {row['count']} | {row['mean_score_change']:+.3g} | {effects} |")
    return "\n".join(lines) + "\n"
