"""The DQN checkpoint, in one torch-free home: its format, the environment spec a network was trained
for, reading a checkpoint folder's record, and checking an environment or a case's roles against it.

A checkpoint is a folder: ``model.pt`` (the Q-network's ``state_dict``, loaded with torch by
:mod:`radagent.agents.dqn`) and ``checkpoint.json`` (format, the network's constructor arguments, the
hyperparameters and the environment spec). Everything here reads the JSON only, so the registry, the
front ends' checks and the Slicer panel never need torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from radagent.envs import GantryEnv, TPPEnv
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard
from radagent.optimize import scored_oar_names

__all__ = [
    "CHECKPOINT_FORMAT",
    "GANTRY_DQN",
    "TPP_DQN",
    "TrainedFor",
    "check_spec",
    "env_spec",
    "read_checkpoint_record",
    "role_problems",
]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainedFor:
    """What a trained agent's registry entry records: the environment its network learned (``gantry`` or
    ``tpp``) and the checkpoint folder shipped with the package for it."""

    env: Literal["gantry", "tpp"]
    shipped: str  # a folder under radagent/agents/checkpoints

    def folder(self, checkpoint: str | None = None) -> Path:
        """The checkpoint an agent option names, or the shipped one."""
        if checkpoint is not None:
            return Path(checkpoint)
        return Path(str(files("radagent.agents").joinpath("checkpoints", self.shipped)))


GANTRY_DQN = TrainedFor("gantry", "dqn-gantry-prostate")
TPP_DQN = TrainedFor("tpp", "dqn-tpp-prostate")


def read_checkpoint_record(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's ``checkpoint.json`` (architecture, hyperparameters, env spec); a missing or
    malformed one is an InputError naming the problem."""
    folder = Path(folder)
    meta, weights = folder / "checkpoint.json", folder / "model.pt"
    if not meta.is_file() or not weights.is_file():
        raise InputError(f"checkpoint {folder} needs checkpoint.json and model.pt")
    try:
        record = json.loads(meta.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"checkpoint {meta} is not valid JSON: {error.msg}") from None
    if (
        not isinstance(record, dict)
        or record.get("format") != CHECKPOINT_FORMAT
        or "architecture" not in record
        or "env_spec" not in record
    ):
        raise InputError(f"checkpoint {meta} is not a radagent DQN checkpoint (format {CHECKPOINT_FORMAT})")
    return record


def env_spec(env: GantryEnv | TPPEnv) -> dict[str, Any]:
    """What gives the observations and actions their meaning (must match to reuse a network) under
    ``"strict"``, and what the agent was trained with but may differ (beams of a TPP agent, the agent
    grid, the case) under ``"info"``."""
    config = env.config
    roles = env.roles
    info = {
        "case": env.source.name,
        "target": roles.target,
        "oars": list(roles.oars),
        "bixel_mm": config.engine.bixel_mm,
        "dose_grid_mm": config.engine.dose_grid_mm,
    }
    if isinstance(env, GantryEnv):
        strict = {
            "env": "gantry",
            "id": env.env_id,
            "mode": config.mode,
            "beams": config.beams,
            "candidate_step_deg": config.candidate_step_deg,
            "observation_shape": list(env.observation_space["volume"].shape),
            "actions": int(env.action_space.n),
            "scored_oars": len(roles.oars),
        }
        return {"strict": strict, "info": info}
    strict = {
        "env": "tpp",
        "id": env.env_id,
        "actions": "set" if config.action == "set" else int(env.action_space.n),
        "observation_size": int(env.observation_space.shape[0]),
        "scored_oars": len(roles.oars),
        "scorecard": env.scorecard_name,
        "dvh_levels": config.dvh_levels,
        "target_dvh_range": list(config.target_dvh_range),
        "oar_dvh_range": list(config.oar_dvh_range),
        "include_tpps": config.include_tpps,
    }
    info |= {"angles_deg": list(config.angles_deg), "start": config.start, "max_steps": config.max_steps}
    return {"strict": strict, "info": info}


def check_spec(trained: dict[str, Any], env: GantryEnv | TPPEnv, source: str) -> None:
    """Refuse an environment whose observations or actions differ from those the network learned."""
    current = env_spec(env)["strict"]
    # checkpoints from before the ids were recorded were trained on the first version of their env
    expected = {"id": f"RadAgent/{'Gantry' if trained['strict'].get('env') == 'gantry' else 'TPP'}-v1"}
    expected |= trained["strict"]
    if expected.get("env") != current["env"]:
        raise InputError(
            f"checkpoint {source} is a {expected.get('env')} agent, not a {current['env']} agent"
        )
    differences = [
        f"{key} {expected.get(key)!r} (this case/env: {current.get(key)!r})"
        for key in sorted(set(expected) | set(current))
        if expected.get(key) != current.get(key)
    ]
    if differences:
        raise InputError(
            f"checkpoint {source} was trained for another environment: " + "; ".join(differences)
        )


def role_problems(
    name: str,
    record: dict[str, Any],
    oar_names: Sequence[str],
    card: ScoreCard | None,
    beams: int | None,
) -> list[str]:
    """What a case's roles lack for a trained agent ``name`` (its checkpoint ``record``), before any
    environment exists: the score card, the number of scored OARs and the beam count must match."""
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
    if "beams" in strict and beams is not None and beams != strict["beams"]:
        problems.append(f"{name} was trained to choose {strict['beams']} beams, not {beams}")
    return problems
