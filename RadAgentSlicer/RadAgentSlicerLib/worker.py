"""The planning computation, runnable in this process or in a separate one (``python worker.py FOLDER``).

The module's Widget exports the case from MRML on the main thread into FOLDER (``case.npz`` +
``request.json``), starts this file with Slicer's Python, reads its progress from stdout (one JSON object
per line) and imports ``output.npz`` + ``output.json`` on the main thread when it exits with status 0.
It imports only ``radagent`` — never MRML, Qt or this package — so it runs in any Python that has the core.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radagent.dose import DoseEngineSettings
from radagent.errors import InputError

__all__ = [
    "PlanOutput",
    "PlanRequest",
    "compute",
    "main",
    "read_case",
    "read_output",
    "read_request",
    "write_case",
    "write_output",
    "write_request",
]

CASE_FILE, REQUEST_FILE = "case.npz", "request.json"
OUTPUT_DOSE_FILE, OUTPUT_FILE = "output.npz", "output.json"
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class PlanRequest:
    """What to plan, in plain values: agents by registry name with their option values, the beams
    (``angles_deg``, else ``beams`` equispaced), the dose grid and beamlet size, and the agents' grid."""

    agent: str | None = "equispaced"  # chooses the beam angles (None: ``angles_deg`` or equispaced)
    tpp_agent: str | None = None  # tunes the planning parameters (None: default TPPs)
    agent_options: dict[str, Any] = field(default_factory=dict)
    tpp_agent_options: dict[str, Any] = field(default_factory=dict)
    beams: int = 7
    angles_deg: tuple[float, ...] | None = None
    dose_grid_mm: float = DoseEngineSettings().dose_grid_mm  # the CLI's defaults
    bixel_mm: float = DoseEngineSettings().bixel_mm
    agent_grid_mm: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.angles_deg is not None:
            object.__setattr__(self, "angles_deg", tuple(float(a) for a in self.angles_deg))
        for name in ("dose_grid_mm", "bixel_mm", "agent_grid_mm"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive size in mm, got {value}")
        if int(self.beams) != self.beams or self.beams < 1:
            raise InputError(f"the number of beams must be a positive integer, got {self.beams}")

    def runs(self) -> tuple[Any, Any]:
        """The angle agent's and the TPP agent's :class:`AgentRun` (None where absent), with the seed,
        agent grid and beam count added to their options; explicit angles exclude an angle agent."""
        from radagent.agents.pipeline import agent_runs

        if self.agent is not None and self.angles_deg is not None:
            raise InputError(f"explicit beam angles conflict with agent '{self.agent}', which chooses them")
        return agent_runs(
            self.agent,
            self.tpp_agent,
            seed=self.seed,
            agent_grid_mm=self.agent_grid_mm,
            beams=self.beams,
            angle_options=self.agent_options,
            tpp_options=self.tpp_agent_options,
        )

    def settings(self) -> Any:
        """The final plan's :class:`PlanSettings` (the agents may replace its angles and TPPs)."""
        from radagent.beams import equispaced_angles
        from radagent.plan import PlanSettings

        angles = self.angles_deg if self.angles_deg is not None else equispaced_angles(self.beams)
        engine = DoseEngineSettings(bixel_mm=self.bixel_mm, dose_grid_mm=self.dose_grid_mm)
        return PlanSettings(angles_deg=angles, engine=engine, seed=self.seed)


@dataclass
class PlanOutput:
    """What a plan returns to the scene: the dose on the CT grid (Gy), metrics.json and plan.json."""

    dose_ct_gy: np.ndarray
    metrics: dict[str, Any]
    description: dict[str, Any]


def compute(case: Any, request: PlanRequest, progress: Any = None) -> PlanOutput:
    """Run the request's agents and plan ``case`` (a :class:`radagent.patient.Case`), as the CLI does."""
    from radagent.agents.pipeline import plan_with_agents

    angle, tpp = request.runs()
    planned = plan_with_agents(case, request.settings(), angle, tpp, progress)
    description = planned.plan.plan_description()
    if planned.agents:
        description["agents"] = [r.to_dict() for r in planned.agents]
    return PlanOutput(planned.plan.dose_ct_gy.astype(np.float32), planned.plan.metrics(), description)


def _replace_atomic(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    write(temporary)
    os.replace(temporary, path)


def write_case(case: Any, folder: str | Path) -> None:
    """Save a Case (CT, grid, structures with roles, protocol) to ``folder/case.npz``, losslessly."""
    folder = Path(folder)
    meta = {
        "name": case.name,
        "structures": [[s.name, str(s.role)] for s in case.structures],
        "prescription_gy": case.prescription_gy,
        "fractions": int(case.protocol.fractions),
        "scorecard": case.protocol.scorecard.name if case.protocol.scorecard is not None else None,
        "patient_position": case.patient_position,
        "description": case.description,
    }

    def write(path: Path) -> None:
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                ct_hu=case.ct_hu,
                ijk_to_ras=case.grid.ijk_to_ras,
                masks=np.stack([s.mask for s in case.structures]),
                meta=np.array(json.dumps(meta)),
            )

    _replace_atomic(folder / CASE_FILE, write)


def read_case(folder: str | Path) -> Any:
    """The Case saved by :func:`write_case`."""
    from radagent.evaluate.scorecard import card_by_name
    from radagent.geometry import Grid
    from radagent.patient import Case, Protocol, Structure

    with np.load(Path(folder) / CASE_FILE) as data:
        meta = json.loads(str(data["meta"]))
        ct_hu, matrix, masks = data["ct_hu"], data["ijk_to_ras"], data["masks"]
    card = card_by_name(meta["scorecard"]) if meta["scorecard"] else None
    return Case(
        name=meta["name"],
        ct_hu=ct_hu,
        grid=Grid(ct_hu.shape, matrix),
        structures=tuple(Structure(n, r, m) for (n, r), m in zip(meta["structures"], masks, strict=True)),
        protocol=Protocol(meta["prescription_gy"], meta["fractions"], card),
        patient_position=meta["patient_position"],
        description=meta["description"],
    )


def write_request(request: PlanRequest, folder: str | Path) -> None:
    """Save the request as ``folder/request.json``."""
    text = json.dumps(asdict(request), indent=2)
    _replace_atomic(Path(folder) / REQUEST_FILE, lambda p: p.write_text(text))


def read_request(folder: str | Path) -> PlanRequest:
    """The request saved by :func:`write_request`."""
    return PlanRequest(**json.loads((Path(folder) / REQUEST_FILE).read_text()))


def write_output(output: PlanOutput, folder: str | Path) -> None:
    """Save the output: dose first, the JSON last, so a present ``output.json`` means a complete output."""
    folder = Path(folder)

    def write_dose(path: Path) -> None:
        with path.open("wb") as handle:
            np.savez_compressed(handle, dose_ct_gy=output.dose_ct_gy)

    _replace_atomic(folder / OUTPUT_DOSE_FILE, write_dose)
    text = json.dumps({"metrics": output.metrics, "description": output.description}, allow_nan=False)
    _replace_atomic(folder / OUTPUT_FILE, lambda p: p.write_text(text))


def read_output(folder: str | Path) -> PlanOutput:
    """The output saved by :func:`write_output`."""
    folder = Path(folder)
    payload = json.loads((folder / OUTPUT_FILE).read_text())
    with np.load(folder / OUTPUT_DOSE_FILE) as data:
        dose = data["dose_ct_gy"]
    return PlanOutput(dose, payload["metrics"], payload["description"])


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Plan the case in FOLDER; progress and the outcome go to stdout as JSON lines. Exit status 0 on
    success, 2 for inputs the planner refuses (the message names the problem), 1 for anything else."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        _emit({"error": "usage: worker.py FOLDER (holding case.npz and request.json)"})
        return EXIT_BAD_INPUT
    folder = Path(args[0])
    try:
        output = compute(
            read_case(folder),
            read_request(folder),
            lambda fraction, message: _emit({"progress": fraction, "message": message}),
        )
        write_output(output, folder)
    except InputError as error:
        _emit({"error": str(error)})
        return EXIT_BAD_INPUT
    except Exception as error:
        import traceback

        traceback.print_exc()
        _emit({"error": f"{type(error).__name__}: {error}"})
        return 1
    _emit({"done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
