"""Beam-angle environment (METHOD §5): choose K gantry angles among candidates; reward = change of R.

Actions: sequential mode adds one candidate per step (``Discrete(n)``); refinement mode moves one beam to
a free candidate (``Discrete(K·n)``) or, with ``refinement_action="set"``, sets the whole angle set at once
(``MultiBinary(n)`` with exactly K ones: what an LLM replies), starting from the equispaced template.

Observation ``{"volume", "angles"}``: ``volume`` is float32 ``(C, nk, nj, ni)`` on a coarse grid spanning
the agent's dose grid, channels CT (HU/1000 clipped to [−1, 2]), target (volume fraction), one channel
per scored OAR in score-card order, one combined channel of the other OARs, dose / p (clipped to 2)
and the chosen beams (union of their fields' central bands: the target's beam's-eye-view extent).
``angles`` is the 0/1 vector of chosen candidates. Every plan is optimized with the default TPPs on the
agent grid and evaluated on the CT grid (renormalized there to target D95 = p): reward, score and
metrics in ``info`` all come from the CT grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from radagent.beams import BeamGeometry, equispaced_angles
from radagent.dose import BeamRows
from radagent.envs.common import (
    EnvConfig,
    PlanningEnv,
    Roles,
    StepPlan,
    plan_step,
)
from radagent.errors import InputError
from radagent.geometry import Grid, resample
from radagent.patient import Case

__all__ = ["GantryConfig", "GantryEnv"]

GantryMode = Literal["sequential", "refinement"]
RefinementAction = Literal["move", "set"]
_CT_RANGE = (-1.0, 2.0)  # HU / 1000
_DOSE_CAP = 2.0  # dose / p


@dataclass(frozen=True)
class GantryConfig(EnvConfig):
    """Beam-angle environment settings (METHOD §5 defaults)."""

    mode: GantryMode = "sequential"
    beams: int = 7
    candidate_step_deg: float = 10.0
    refinement_iterations: int = 10
    refinement_action: RefinementAction = "move"  # move one beam, or set the whole set (an LLM's reply)
    max_steps: int | None = None  # sequential step limit counting invalid actions; None: 2·beams
    observation_shape: tuple[int, int, int] = (16, 32, 32)  # (nk, nj, ni)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("sequential", "refinement"):
            raise InputError(f"gantry mode must be 'sequential' or 'refinement', got {self.mode!r}")
        if self.refinement_action not in ("move", "set"):
            raise InputError(f"refinement action must be 'move' or 'set', got {self.refinement_action!r}")
        if not 0 < self.candidate_step_deg <= 180 or (360.0 / self.candidate_step_deg) % 1:
            raise InputError(f"candidate step must divide 360°, got {self.candidate_step_deg}°")
        if not 1 <= self.beams < len(self.candidates_deg):
            raise InputError(f"{self.beams} beams do not fit {len(self.candidates_deg)} candidate angles")
        if self.refinement_iterations < 1 or min(self.observation_shape) < 1:
            raise InputError("refinement iterations and observation sizes must be positive")

    @property
    def candidates_deg(self) -> tuple[float, ...]:
        """Candidate gantry angles (degrees), every ``candidate_step_deg`` from 0."""
        return equispaced_angles(round(360.0 / self.candidate_step_deg))

    @property
    def step_limit(self) -> int:
        """Steps after which an episode is truncated."""
        if self.mode == "refinement":
            return self.refinement_iterations
        return self.max_steps if self.max_steps is not None else 2 * self.beams


@dataclass(frozen=True, eq=False)
class _Patient:
    """Per-variant precomputation: the case, its roles, the structure rows of every candidate beam, the
    static observation channels, beam bands."""

    variant: int
    case: Case
    roles: Roles
    beam_rows: BeamRows  # beam n = candidate n
    grid: Grid  # the observation grid
    static: np.ndarray  # (C − 2, nk, nj, ni): CT, target, OARs, other OARs
    bands: np.ndarray  # (n_candidates, nk, nj, ni) bool


def observation_grid(dose_grid: Grid, shape: tuple[int, int, int]) -> Grid:
    """A grid of ``shape`` (nk, nj, ni) covering the same box as ``dose_grid``."""
    spacing = dose_grid.spacing_mm
    extent = spacing * np.array(dose_grid.shape[::-1])
    coarse = extent / np.array(shape[::-1])
    origin = dose_grid.origin_ras + dose_grid.direction @ (0.5 * (coarse - spacing))
    return Grid.from_spacing(shape, tuple(coarse), tuple(origin), dose_grid.direction)


def _beam_bands(case: Case, grid: Grid, candidates: tuple[float, ...]) -> np.ndarray:
    """For each candidate beam, the observation voxels inside the target's beam's-eye-view box."""
    k, j, i = np.nonzero(case.target_mask())
    target = case.grid.ijk_to_ras_points(np.stack([i, j, k], axis=1)[::7])
    voxels = grid.voxel_centers_ras()
    bands = np.empty((len(candidates), *grid.shape), dtype=bool)
    for n, angle in enumerate(candidates):
        beam = BeamGeometry(angle, case.isocenter_ras, case.patient_position)
        low, high = (f(beam.project_to_isocenter_plane(target), axis=0) for f in (np.min, np.max))
        uv = beam.project_to_isocenter_plane(voxels)
        bands[n] = np.all((uv >= low) & (uv <= high), axis=1).reshape(grid.shape)
    return bands


class GantryEnv(PlanningEnv):
    """Beam-angle selection, sequential (add one candidate per step) or refinement (move one beam)."""

    env_id = "RadAgent/Gantry-v1"
    log_name = "gantry"
    config_type = GantryConfig
    config: GantryConfig

    @property
    def candidates(self) -> tuple[float, ...]:
        """The candidate gantry angles (degrees); action n adds (or moves a beam to) candidate n."""
        return self.config.candidates_deg

    def _define_spaces(self, first: _Patient) -> None:
        n, channels = len(self.candidates), first.static.shape[0] + 2
        if self._sets_whole_sets:
            self.action_space = spaces.MultiBinary(n)
        else:
            self.action_space = spaces.Discrete(
                n if self.config.mode == "sequential" else self.config.beams * n
            )
        self.observation_space = spaces.Dict(
            {
                "volume": spaces.Box(
                    _CT_RANGE[0], _DOSE_CAP, (channels, *self.config.observation_shape), np.float32
                ),
                "angles": spaces.MultiBinary(n),
            }
        )

    def _patient(self, variant: int, case: Case) -> _Patient:
        """Precompute a variant once (kept for a few variants): every candidate beam's dose block and
        structure rows, and the static channels."""
        if variant not in self._patients:
            roles = self._roles(case, getattr(self, "roles", None), needs_card=False)
            blocks, dose_grid = self.cache.beam_blocks(case, self.candidates, self.config.engine)
            grid = observation_grid(dose_grid, self.config.observation_shape)
            ct = np.clip(resample(case.ct_hu, case.grid, grid, fill_value=-1000.0) / 1000.0, *_CT_RANGE)

            def fraction(masks: list[np.ndarray]) -> np.ndarray:
                union = np.logical_or.reduce(masks) if masks else np.zeros(case.grid.shape, bool)
                return resample(union.astype(np.float32), case.grid, grid)

            channels = [ct, fraction([case.structure(roles.target).mask])]
            channels += [fraction([case.structure(n).mask]) for n in roles.oars]
            channels.append(fraction([case.structure(n).mask for n in roles.other_oars]))
            self._patients[variant] = _Patient(
                variant,
                case,
                roles,
                BeamRows.build(blocks, dose_grid, case, [roles.target, *roles.oars]),
                grid,
                np.stack(channels).astype(np.float32),
                _beam_bands(case, grid, self.candidates),
            )
            self._keep_recent(self._patients)
        self._patients.move_to_end(variant)
        return self._patients[variant]

    @property
    def _sets_whole_sets(self) -> bool:
        return self.config.mode == "refinement" and self.config.refinement_action == "set"

    def action_masks(self) -> np.ndarray:
        """True for the valid actions: candidates not chosen yet (for any beam, in refinement); every
        candidate when the action sets a whole set (a valid set has exactly K of them)."""
        if self._sets_whole_sets:
            return np.ones(len(self.candidates), dtype=bool)
        free = ~self._chosen_mask()
        if self.config.mode == "sequential":
            return free if len(self._angles) < self.config.beams else np.zeros_like(free)
        return np.tile(free, self.config.beams)

    def _chosen_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.candidates), dtype=bool)
        mask[list(self._angles)] = True
        return mask

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: sequential with no beam, refinement from the equispaced template."""
        super().reset(seed=seed)
        self._episode += 1
        self.patient = self._patient(*self.source.draw(self.np_random))
        self._steps = 0
        self._plan: StepPlan | None = None
        self._angles: list[int] = []
        if self.config.mode == "refinement":
            step = self.config.candidate_step_deg
            template = equispaced_angles(self.config.beams)
            self._angles = list(dict.fromkeys(round(a / step) % len(self.candidates) for a in template))
            if len(self._angles) != self.config.beams:
                raise InputError(f"the {self.config.beams}-beam template does not fit {step:g}° candidates")
            self._plan, self._dose_obs = self._evaluate(self._angles)
        else:
            self._dose_obs = np.zeros(self.config.observation_shape, dtype=np.float32)
        return self._started()

    def _choices(self) -> dict[str, Any]:
        return {"angles": [int(a) for a in self._angles]}  # candidate indices, in the order chosen

    def restore_episode(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Continue the episode :meth:`episode_state` described (its plan re-optimized, which is
        deterministic) and return its observation; the random generator is the caller's to restore."""
        self.patient = self._patient(int(state["variant"]), self.source.case(int(state["variant"])))
        self._episode, self._steps = int(state["episode"]), int(state["steps"])
        self._angles = [int(a) for a in state["angles"]]
        self._plan = None
        self._dose_obs = np.zeros(self.config.observation_shape, dtype=np.float32)
        if self._angles:
            self._plan, self._dose_obs = self._evaluate(self._angles)
        return self._observation()

    def step(self, action: Any):
        """Apply one action; an invalid one is a penalized no-op flagged ``info["invalid_action"]``."""
        if self._sets_whole_sets:
            chosen = np.asarray(action, dtype=np.int8).reshape(-1)
            if not self.action_space.contains(chosen):
                raise InputError(f"action {action} is outside {self.action_space}")
            action = [int(a) for a in np.flatnonzero(chosen)]
            valid = len(action) == self.config.beams
        else:
            action = self._checked(action)
            valid = bool(self.action_masks()[action])
        self._steps += 1
        reward = self.config.invalid_action_penalty
        if valid:
            angles = list(self._angles)
            n = len(self.candidates)
            if self._sets_whole_sets:
                angles = action
            elif self.config.mode == "sequential":
                angles.append(action)
            else:
                angles[action // n] = action % n
            previous = self._plan.reward if self._plan is not None else 0.0
            self._plan, self._dose_obs = self._evaluate(angles)
            self._angles = angles
            reward = self._plan.reward - previous
        terminated = self.config.mode == "sequential" and len(self._angles) == self.config.beams
        truncated = not terminated and self._steps >= self.config.step_limit
        return self._stepped(action, reward, terminated, truncated, valid)

    def _evaluate(self, angle_indices: list[int]) -> tuple[StepPlan, np.ndarray]:
        """Optimize the plan of these candidate beams (their rows, in this order) and evaluate it on the
        CT grid."""
        case = self.patient.case
        with self._numba_threads():
            rows = self.patient.beam_rows.select(angle_indices)
            plan, result = plan_step(case, rows, None, self.config)
            dose = resample(result.dose_volume_gy * plan.normalization, rows.dose_grid, self.patient.grid)
        return plan, np.clip(dose / case.prescription_gy, 0.0, _DOSE_CAP).astype(np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        chosen = self._chosen_mask()
        beams = np.any(self.patient.bands[chosen], axis=0) if chosen.any() else np.zeros_like(self._dose_obs)
        volume = np.concatenate([self.patient.static, self._dose_obs[None], beams[None].astype(np.float32)])
        return {"volume": volume, "angles": chosen.astype(np.int8)}

    def _plan_info(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "angles_deg": [self.candidates[a] for a in self._angles],
            "plan_reward": plan.reward if plan is not None else 0.0,
            "objective": plan.objective if plan is not None else None,
            "score": plan.score if plan is not None else None,
            "smooth_score": plan.smooth_score if plan is not None else None,
            "metrics": plan.evaluation.to_dict() if plan is not None else None,
        }

    @property
    def plan_dose_ct_gy(self) -> np.ndarray | None:
        """The current plan's dose on the CT grid (Gy; None before the first beam)."""
        return self._plan.dose_ct_gy if self._plan is not None else None

    def _record_fields(self, action: Any, info: dict[str, Any]) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "angles_deg": info["angles_deg"],
            "plan_reward": info["plan_reward"],
        }
