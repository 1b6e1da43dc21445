"""Planning-parameter environment (METHOD §5): one multiplicative step on one TPP per action.

Actions ``2·e`` and ``2·e + 1`` raise and lower TPP entry ``e`` (vector order of :class:`TPPs`) by the
sources' factors, clipped to the bounds; one that changes nothing is invalid (masked). Observation: the
cumulative DVH of the target (p…1.15p) and of each scored OAR in card order (0.6p…1.1p) at 100 levels,
float32 in [0, 1], optionally followed by the TPPs (t and V as they are, λ as log10 λ). Reward
ΔS_smooth + 4·ΔS; the fluence is re-optimized from a cold start each step on the agent grid and the
plan evaluated on the CT grid, which every number in ``info`` and the reward use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from radagent.beams import equispaced_angles
from radagent.envs.common import (
    EnvConfig,
    PlanningEnv,
    Roles,
    StepPlan,
    plan_step,
)
from radagent.errors import InputError
from radagent.evaluate import StructureDoses
from radagent.geometry import Grid
from radagent.optimize import StructureInfluence, TPPs
from radagent.patient import Case

__all__ = ["TPPConfig", "TPPEnv"]

TPPAction = Literal["step", "set"]
StartMode = Literal["default", "random"]
# (up, down) factors of the sources, per kind (t, λ, V) and structure (target, OAR).
_FACTORS = (((1.01, 0.91), (1.25, 0.6)), ((1.65, 0.6), (1.65, 0.6)), ((1.25, 0.8), (1.25, 0.8)))


@dataclass(frozen=True)
class TPPConfig(EnvConfig):
    """TPP-tuning environment settings (METHOD §5 defaults)."""

    angles_deg: tuple[float, ...] = field(default_factory=lambda: equispaced_angles(7))
    start: StartMode = "default"
    max_steps: int = 20
    include_tpps: bool = False
    dvh_levels: int = 100
    target_dvh_range: tuple[float, float] = (1.0, 1.15)  # fractions of p
    oar_dvh_range: tuple[float, float] = (0.6, 1.1)
    score_weight: float = 4.0  # reward = ΔS_smooth + score_weight·ΔS
    action: TPPAction = "step"  # step: one TPP × its factor (18 actions for prostate); set: a whole vector

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action not in ("step", "set"):
            raise InputError(f"TPP action must be 'step' or 'set', got {self.action!r}")
        if self.start not in ("default", "random"):
            raise InputError(f"TPP start must be 'default' or 'random', got {self.start!r}")
        if self.max_steps < 1 or self.dvh_levels < 2:
            raise InputError("max steps must be ≥ 1 and DVH levels ≥ 2")


def step_factors(oar_count: int) -> np.ndarray:
    """(3 + 3N, 2) up/down factors per TPP entry, in vector order."""
    return np.array([f for kind in _FACTORS for f in (kind[0], *[kind[1]] * oar_count)])


@dataclass(frozen=True, eq=False)
class _Patient:
    """A variant prepared for tuning: case, roles, dose grid and the structure rows of its fixed beams."""

    variant: int
    case: Case
    roles: Roles
    dose_grid: Grid
    rows: StructureInfluence


def _given_tpps(given: Any, template: TPPs) -> TPPs:
    """TPPs from a reset option: a full vector, or a mapping of entry names over ``template``."""
    if isinstance(given, dict):
        unknown = sorted(set(given) - set(template.names))
        if unknown:
            raise InputError(f"unknown TPP names {unknown}; known: {', '.join(template.names)}")
        tpps = template
        for name, value in given.items():
            tpps = tpps.with_value(name, float(value))
        return tpps
    return TPPs(template.oar_names, tuple(float(v) for v in given))


class TPPEnv(PlanningEnv):
    """Tune the 3 + 3N TPPs of a fixed-beam plan towards the score card's maximum."""

    env_id = "RadAgent/TPP-v1"
    log_name = "tpp"
    config_type = TPPConfig
    config: TPPConfig

    def _define_spaces(self, first: _Patient) -> None:
        self.oar_count = len(first.roles.oars)
        self.factors = step_factors(self.oar_count)
        if self.config.action == "set":  # an agent that proposes whole TPP vectors (an LLM's reply)
            low, high = TPPs.bounds(self.oar_count)
            self.action_space = spaces.Box(low, high, dtype=np.float64)
        else:
            self.action_space = spaces.Discrete(2 * self.factors.shape[0])
        low = np.zeros((1 + self.oar_count) * self.config.dvh_levels, np.float32)
        high = np.ones_like(low)
        if self.config.include_tpps:
            bounds = [self._features(np.asarray(b)) for b in TPPs.bounds(self.oar_count)]
            low, high = np.concatenate([low, bounds[0]]), np.concatenate([high, bounds[1]])
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def _patient(self, variant: int, case: Case) -> _Patient:
        """Dose rows of the fixed beams for a variant, computed once and kept for a few variants."""
        if variant not in self._patients:
            roles = self._roles(case, getattr(self, "roles", None), needs_card=True)
            influence = self.cache.get(case, self.config.angles_deg, self.config.engine)
            rows = StructureInfluence.build(
                influence.matrix, influence.dose_grid, case, [roles.target, *roles.oars]
            )
            self._patients[variant] = _Patient(variant, case, roles, influence.dose_grid, rows)
            self._keep_recent(self._patients)
        self._patients.move_to_end(variant)
        return self._patients[variant]

    def _features(self, values: np.ndarray) -> np.ndarray:
        """TPPs as observation features: t and V as they are, λ as log10 λ."""
        features = np.array(values, dtype=np.float64)
        size = 1 + self.oar_count
        features[size : 2 * size] = np.log10(features[size : 2 * size])
        return features.astype(np.float32)

    def _moved(self, action: int) -> TPPs:
        """The TPPs after ``action`` (clipped to the bounds)."""
        entry, direction = divmod(int(action), 2)
        value = self.tpps.values[entry] * self.factors[entry, direction]
        return self.tpps.with_value(self.tpps.names[entry], value)

    def action_masks(self) -> np.ndarray:
        """True for the actions that change a TPP (a step clipped to no change is invalid)."""
        if self.config.action == "set":
            raise InputError(
                "action masks belong to step actions; a set action takes any vector in the bounds"
            )
        return np.array([self._moved(a).values != self.tpps.values for a in range(self.action_space.n)])

    def action_name(self, action: int) -> str:
        """E.g. ``lambda_Rectum×1.65``."""
        entry, direction = divmod(int(action), 2)
        return f"{self.tpps.names[entry]}×{self.factors[entry, direction]:g}"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start from the default or a random (seeded) TPP vector on a drawn variant, or from the TPPs
        given as ``options={"tpps": values}`` (3 + 3N values in vector order, or name → value; clipped to
        the bounds): how an agent that proposes whole TPP vectors evaluates one."""
        super().reset(seed=seed)
        self._episode += 1
        self.patient = self._patient(*self.source.draw(self.np_random))
        oars = self.patient.roles.oars
        start = TPPs.default(oars) if self.config.start == "default" else TPPs.random(oars, self.np_random)
        if options and options.get("tpps") is not None:
            start = _given_tpps(options["tpps"], start)
        self.tpps = start
        self._steps = 0
        self._plan = self._evaluate(start)
        return self._started()

    def _choices(self) -> dict[str, Any]:
        return {"tpps": [float(v) for v in self.tpps.values]}

    def restore_episode(self, state: dict[str, Any]) -> np.ndarray:
        """Continue the episode :meth:`episode_state` described (its plan re-optimized, which is
        deterministic) and return its observation; the random generator is the caller's to restore."""
        self.patient = self._patient(int(state["variant"]), self.source.case(int(state["variant"])))
        self.tpps = TPPs(self.patient.roles.oars, tuple(float(v) for v in state["tpps"]))
        self._episode, self._steps = int(state["episode"]), int(state["steps"])
        self._plan = self._evaluate(self.tpps)
        return self._observation()

    def step(self, action: Any):
        """Apply one TPP step (or, with set actions, a whole TPP vector, clipped to the bounds) and
        re-optimize; an invalid step is a penalized no-op flagged in ``info``."""
        if self.config.action == "set":
            values = np.asarray(action, dtype=np.float64).reshape(-1)
            if values.shape != self.action_space.shape or not np.all(np.isfinite(values)):
                raise InputError(
                    f"a set action is {self.action_space.shape[0]} finite TPP values, got {action!r}"
                )
            moved, action, valid = TPPs(self.tpps.oar_names, tuple(values)), None, True
        else:
            action = self._checked(action)
            moved = self._moved(action)
            valid = moved.values != self.tpps.values
        self._steps += 1
        reward = self.config.invalid_action_penalty
        if valid:
            previous = self._plan
            plan = previous if moved.values == self.tpps.values else self._evaluate(moved)
            self.tpps, self._plan = moved, plan
            reward = (self._plan.smooth_score - previous.smooth_score) + self.config.score_weight * (
                self._plan.score - previous.score
            )
        terminated = self._plan.score >= self._plan.evaluation.score_max - 1e-9
        truncated = not terminated and self._steps >= self.config.max_steps
        return self._stepped(action, reward, terminated, truncated, valid)

    @property
    def plan_dose_ct_gy(self) -> np.ndarray:
        """The current plan's dose on the CT grid (Gy)."""
        return self._plan.dose_ct_gy

    def _evaluate(self, tpps: TPPs) -> StepPlan:
        """Optimize from a cold start with these TPPs and evaluate the plan on the CT grid."""
        patient = self.patient
        with self._numba_threads():
            return plan_step(patient.case, patient.rows, tpps, self.config)[0]

    def _observation(self) -> np.ndarray:
        case, roles, levels = self.patient.case, self.patient.roles, self.config.dvh_levels
        p = case.prescription_gy
        dvhs = []
        for name, (low, high) in zip(
            (roles.target, *roles.oars),
            (self.config.target_dvh_range, *[self.config.oar_dvh_range] * len(roles.oars)),
            strict=True,
        ):
            doses = StructureDoses.from_mask(name, self._plan.dose_ct_gy, case.structure(name).mask, 1.0)
            dvhs.append(doses.cumulative_dvh(np.linspace(low * p, high * p, levels)))
        if self.config.include_tpps:
            dvhs.append(self._features(self.tpps.as_array()))
        return np.concatenate(dvhs).astype(np.float32)

    def _plan_info(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "tpps": self.tpps.to_dict(),
            "score": plan.score,
            "score_max": plan.evaluation.score_max,
            "smooth_score": plan.smooth_score,
            "plan_reward": plan.reward,
            "objective": plan.objective,
            "metrics": plan.evaluation.to_dict(),
        }

    def _record_fields(self, action: Any, info: dict[str, Any]) -> dict[str, Any]:
        return {
            "action_name": self.action_name(action) if action is not None else None,
            "tpps": info["tpps"],
            "smooth_score": info["smooth_score"],
        }
