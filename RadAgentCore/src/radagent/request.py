"""What to plan, as one serializable request: the only way into planning, for every front end.

The CLI's ``plan``, batch mode, the Slicer module and Python callers all build a :class:`PlanRequest`,
check it with :meth:`PlanRequest.validated` (conflicting choices, bad values) and
:meth:`PlanRequest.problems` (what a case lacks for the chosen agents), and run it with
:func:`run_plan`. Every default of a plan is written here, once; a request round-trips through JSON
(:meth:`PlanRequest.to_dict`, :meth:`PlanRequest.from_dict`, ``"format": 1``).

Error messages name the request's fields in the words of the front end that filled them: each check takes
``words`` (e.g. the CLI's ``{"angles_deg": "--angles"}``) over :data:`FIELD_WORDS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radagent.agents.pipeline import (
    AgentRun,
    PlannedRequest,
    agent_options,
    case_problems,
    option_values,
    plan_with_agents,
    role_problems,
)
from radagent.beams import DEFAULT_BEAMS, equispaced_angles
from radagent.cases import load_case
from radagent.dose import DoseEngineSettings
from radagent.envs.common import AGENT_GRID_MM, agent_engine
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard, card_by_name
from radagent.geometry import Grid
from radagent.io.archive import read_case_archive
from radagent.io.atomic import atomic_path
from radagent.io.dicom_read import case_from_dicom
from radagent.io.inputs import card_spellings, case_from_files, case_with_roles
from radagent.io.matrad import read_matrad
from radagent.optimize import TPPs, tpp_oar_names
from radagent.patient import Case, Protocol
from radagent.plan import FluenceMode, ObjectiveSetName, PlanSettings
from radagent.progress import ProgressCallback

__all__ = [
    "FIELD_WORDS",
    "REQUEST_FORMAT",
    "PatientInput",
    "PlanRequest",
    "case_from_masks",
    "load_patient",
    "parse_targets",
    "read_request",
    "run_plan",
    "write_request",
]

REQUEST_FORMAT = 1
DEFAULT_FRACTIONS = 1  # for a case read from files, unless the request gives its fractions

FIELD_WORDS: Mapping[str, str] = {
    "case": "a built-in case",
    "ct": "a CT",
    "structures": "its structures",
    "matrad": "a matRad file",
    "archive": "a case archive",
    "dicom": "a DICOM folder",
    "series": "a CT series",
    "structure_set": "a structure set",
    "targets": "target structure",
    "oars": "organ at risk",
    "body": "body structure",
    "labels": "labelmap value",
    "prescription_gy": "the prescription in Gy",
    "agent": "agent",
    "angles_deg": "the angle list",
    "tpps": "the TPP list",
    "beams": "a beam count",
    "fluence": "fluence",
}
_KIND_VERB = {"angles": "choose the angles", "tpp": "tune the TPPs"}
_CHOOSES = {"angles": "the beams", "tpp": "the TPPs"}


@dataclass(frozen=True)
class PatientInput:
    """Where the patient comes from: a built-in case (and its variant), a CT with a segmentation or
    labelmap (``labels``: name → value), a matRad ``.mat`` file, a case archive (``.npz``) or a DICOM
    folder (CT series and RTSTRUCT; ``series``, ``structure_set``: their UIDs where the folder holds
    several). None of them: the front end supplies the case itself (the Slicer module, from its scene).
    """

    case: str | None = None
    variant: int = 0
    ct: str | None = None
    structures: str | None = None
    labels: Mapping[str, int] = field(default_factory=dict)
    matrad: str | None = None
    archive: str | None = None
    dicom: str | None = None
    series: str | None = None
    structure_set: str | None = None

    def __post_init__(self) -> None:
        for name in ("case", "ct", "structures", "matrad", "archive", "dicom", "series", "structure_set"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        if isinstance(self.variant, bool) or int(self.variant) != self.variant or self.variant < 0:
            raise InputError(f"case variant must be a non-negative integer, got {self.variant!r}")
        object.__setattr__(self, "variant", int(self.variant))
        labels = {str(k): _integer(f"label value of {k!r}", v) for k, v in dict(self.labels).items()}
        object.__setattr__(self, "labels", labels)

    @property
    def sources(self) -> list[str]:
        """The kinds of input given: ``case``, ``files``, ``matrad``, ``archive``, ``dicom`` (one, when
        valid)."""
        given = {
            "case": self.case is not None,
            "files": self.ct is not None or self.structures is not None,
            "matrad": self.matrad is not None,
            "archive": self.archive is not None,
            "dicom": self.dicom is not None,
        }
        return [kind for kind, present in given.items() if present]

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (a built-in case with its variant)."""
        values = dataclasses.asdict(self)
        kept = {k: v for k, v in values.items() if v is not None and v != {} and k != "variant"}
        if self.case is not None:
            kept["variant"] = self.variant
        return kept

    def resolved(self, folder: Path) -> PatientInput:
        """The input with relative file paths taken relative to ``folder`` (a request file's folder)."""
        paths = {
            name: str(folder / value)
            for name in ("ct", "structures", "matrad", "archive", "dicom")
            if (value := getattr(self, name)) is not None and not Path(value).is_absolute()
        }
        return dataclasses.replace(self, **paths)


@dataclass(frozen=True)
class PlanRequest:
    """Everything that decides a plan, in plain values: the patient and its roles, the protocol, the beams,
    the dose-engine and agent grids, the agents with their options, planning parameters, seed, fluence.

    ``None`` means "the case's own" (prescription, fractions, score card of a built-in case) or "the
    default" (``beams``: 7 equispaced, or the angle agent's own count). ``tpps`` are values of the TPP
    objective by name (``t_PTV``, ``lambda_Rectum``, …) over the default start; ``objective_set`` is
    ``tpp`` with them or a TPP agent, else ``default`` (:mod:`radagent.optimize.default_objectives`).
    ``target_levels_gy`` gives targets their own dose (a simultaneous integrated boost; the others get the
    prescription, which defaults to the highest level); the plan is normalized to the D95 of the primary
    (highest-level) target, or of ``normalization_target``. The agents' grid is the beamlet width and
    dose grid they plan on, the final plan uses ``bixel_mm`` / ``dose_grid_mm``.
    """

    patient: PatientInput = field(default_factory=PatientInput)
    targets: tuple[str, ...] = ()
    oars: tuple[str, ...] = ()
    body: str | None = None
    prescription_gy: float | None = None
    fractions: int | None = None
    scorecard: str | None = None
    angles_deg: tuple[float, ...] | None = None
    beams: int | None = None
    bixel_mm: float = DoseEngineSettings.bixel_mm
    dose_grid_mm: float = DoseEngineSettings.dose_grid_mm
    agent_grid_mm: float = AGENT_GRID_MM
    agents: tuple[AgentRun, ...] = ()
    tpps: Mapping[str, float] = field(default_factory=dict)
    objective_set: ObjectiveSetName | None = None
    target_levels_gy: Mapping[str, float] = field(default_factory=dict)
    normalization_target: str | None = None
    fluence: FluenceMode = "optimized"
    seed: int = 0

    def __post_init__(self) -> None:
        """Plain JSON values become the fields' types (lists → tuples, agents → AgentRun, numbers)."""
        convert = object.__setattr__
        if isinstance(self.patient, Mapping):
            convert(self, "patient", PatientInput(**self.patient))
        convert(self, "targets", tuple(str(n) for n in _listed("targets", self.targets)))
        convert(self, "oars", tuple(str(n) for n in _listed("oars", self.oars)))
        if self.angles_deg is not None:
            angles = _listed("angles_deg", self.angles_deg)
            convert(self, "angles_deg", tuple(_number("gantry angle", a) for a in angles))
        for name in ("prescription_gy", "bixel_mm", "dose_grid_mm", "agent_grid_mm"):
            if getattr(self, name) is not None:
                convert(self, name, _number(name, getattr(self, name)))
        for name in ("fractions", "beams", "seed"):
            if getattr(self, name) is not None:
                convert(self, name, _integer(name, getattr(self, name)))
        convert(self, "agents", tuple(_agent_run(a) for a in _listed("agents", self.agents)))
        if not isinstance(self.tpps, Mapping):
            raise InputError(f"tpps must map TPP names to values, got {self.tpps!r}")
        convert(self, "tpps", {str(k): _number(f"TPP {k}", v) for k, v in self.tpps.items()})
        if not isinstance(self.target_levels_gy, Mapping):
            raise InputError(
                f"target_levels_gy must map target names to doses, got {self.target_levels_gy!r}"
            )
        levels = {str(k): _number(f"dose level of {k}", v) for k, v in self.target_levels_gy.items()}
        convert(self, "target_levels_gy", levels)

    # -- checks -----------------------------------------------------------------------------------------

    def validated(self, words: Mapping[str, str] | None = None) -> PlanRequest:
        """This request, after checking every value and that no two choices conflict; the first problem is
        an InputError naming the fields in ``words``. Front ends call this right after building a request."""
        w = {**FIELD_WORDS, **(words or {})}
        for name in ("bixel_mm", "dose_grid_mm", "agent_grid_mm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive size in mm, got {value}")
        if self.beams is not None and self.beams < 1:
            raise InputError(f"the number of beams must be at least 1, got {self.beams}")
        if self.beams is not None and self.angles_deg is not None:
            raise InputError(f"give {w['angles_deg']} or {w['beams']}, not both")
        if self.seed < 0:
            raise InputError(f"the seed must be 0 or more, got {self.seed}")
        self._check_patient(w)
        self._check_protocol(w)
        self._check_agents(w)
        self.plan_settings()  # angles in range and distinct, the fluence mode
        return self

    def _check_patient(self, w: Mapping[str, str]) -> None:
        patient = self.patient
        if len(patient.sources) > 1:
            raise InputError(_one_patient_input(w))
        if (patient.ct is None) != (patient.structures is None):
            raise InputError(f"{w['ct']} and {w['structures']} go together")
        if patient.labels and patient.structures is None:
            raise InputError(f"a {w['labels']} applies to a labelmap given with {w['structures']}")
        for name in ("series", "structure_set"):
            if getattr(patient, name) is not None and patient.dicom is None:
                raise InputError(f"{w[name]} applies to {w['dicom']}")
        if patient.case is not None or patient.archive is not None:
            what = "a built-in case" if patient.case is not None else "a case archive"
            roles = {"targets": self.targets, "oars": self.oars, "body": self.body, "labels": patient.labels}
            given = [name for name, value in roles.items() if value]
            if given:
                raise InputError(f"{what} knows its structures; do not name a {w[given[0]]}")
        if patient.ct is not None:
            self.check_roles(w)

    def check_roles(self, words: Mapping[str, str] | None = None) -> None:
        """What a case built from named masks needs: a target and the prescription (InputError if not)."""
        w = {**FIELD_WORDS, **(words or {})}
        if not self.targets:
            raise InputError(f"choose at least one {w['targets']}")
        if self.prescription() is None:
            raise InputError(f"give {w['prescription_gy']}")

    def _check_protocol(self, w: Mapping[str, str]) -> None:
        if self.prescription_gy is not None and (
            not math.isfinite(self.prescription_gy) or self.prescription_gy <= 0
        ):
            raise InputError(f"the prescription must be a positive dose in Gy, got {self.prescription_gy}")
        if self.fractions is not None and self.fractions < 1:
            raise InputError(f"the number of fractions must be at least 1, got {self.fractions}")
        self.card()
        if self.tpps and self.fluence == "uniform":
            raise InputError(f"{w['tpps']} applies to optimized fluence, not {w['fluence']} uniform")
        if self.tpps and self.objective_set == "default":
            raise InputError(f"{w['tpps']} applies to the TPP objective set, not the default one")
        for name in self.target_levels_gy:
            if name not in self.targets:
                raise InputError(f"a dose level is given for '{name}', which is not a target")
        named = self.normalization_target
        if named is not None and self.targets and named not in self.targets:  # else checked on the case
            raise InputError(f"the plan can be normalized to a target only; '{named}' is not one")

    def _check_agents(self, w: Mapping[str, str]) -> None:
        by_kind: dict[str, AgentRun] = {}
        for run in self.agents:
            spec = run.spec
            if spec.kind in by_kind:
                first = by_kind[spec.kind].name
                raise InputError(
                    f"{w['agent']} {first} and {w['agent']} {run.name} both {_KIND_VERB[spec.kind]}; "
                    "give at most one agent of each kind"
                )
            by_kind[spec.kind] = run
            if "engine" in run.options:
                raise InputError(
                    f"agent {run.name!r}: its grid is the request's agent_grid_mm, not an option"
                )
            agent_options(spec, **option_values(spec, run.options))
        conflicts = {
            "angles": ("angles_deg", self.angles_deg is not None),
            "tpp": ("tpps", bool(self.tpps)),
        }
        for kind, (name, given) in conflicts.items():
            if kind in by_kind and given:
                agent = by_kind[kind].name
                raise InputError(
                    f"{w[name]} conflicts with {w['agent']} {agent}, which chooses {_CHOOSES[kind]}"
                )
        if "tpp" in by_kind and self.objective_set == "default":
            raise InputError(
                f"the default objective set conflicts with {w['agent']} {by_kind['tpp'].name}, "
                "which tunes the TPP objective"
            )
        if "tpp" in by_kind and self.fluence == "uniform":
            raise InputError(
                f"{w['fluence']} uniform conflicts with {w['agent']} {by_kind['tpp'].name}, "
                "which chooses the TPPs"
            )

    def problems(self, case: Case | None = None, modules: bool = True) -> list[str]:
        """What the case lacks for the chosen agents (empty when all can run), checked before anything
        runs: a role or score card, the roles a trained agent learned and, with ``modules``, a Python
        module it imports (a panel that installs them itself leaves them out).

        Without ``case`` the request's own role names are checked (what a panel knows before exporting
        its segments); a built-in case, a matRad file or an archive is loaded to check it.
        """
        runs = [run for run in self.runs() if run is not None]
        if case is None and self.patient.sources and self.patient.ct is None:
            case = load_patient(self)
        if case is not None:
            return [problem for run in runs for problem in case_problems(run, case, modules)]
        card = self.card()
        spelled = card_spellings(card, self.oars)
        oars = [spelled.get(name, name) for name in self.oars]
        return [problem for run in runs for problem in role_problems(run, oars, card, modules, self.targets)]

    # -- what the request means ----------------------------------------------------------------------

    def card(self) -> ScoreCard | None:
        """The score card the request names (None: the case's own, or none)."""
        return card_by_name(self.scorecard) if self.scorecard is not None else None

    def angle_agent(self) -> AgentRun | None:
        """The agent that chooses the beams, as requested (None: the request's beams)."""
        return next((run for run in self.agents if run.spec.kind == "angles"), None)

    def tpp_agent(self) -> AgentRun | None:
        """The agent that tunes the planning parameters, as requested (None: the request's TPPs)."""
        return next((run for run in self.agents if run.spec.kind == "tpp"), None)

    def runs(self) -> tuple[AgentRun | None, AgentRun | None]:
        """The angle agent's and the TPP agent's runs with what each takes from the request — the seed, the
        agent grid and, for the angle agent, the beam count — under their own option values."""
        common = {"seed": self.seed, "engine": agent_engine(self.agent_grid_mm)}
        beams = {"beams": self.beams} if self.beams is not None else {}
        runs = []
        for run, extra in ((self.angle_agent(), beams), (self.tpp_agent(), {})):
            options = {**common, **extra, **option_values(run.spec, run.options)} if run else None
            runs.append(AgentRun(run.name, options) if run else None)
        return runs[0], runs[1]

    def plan_settings(self, case: Case | None = None) -> PlanSettings:
        """The final plan's settings (agents may replace its angles and TPPs); with ``case``, the TPP
        values are set on the case's TPP vector (an unknown name is an InputError)."""
        angles = (
            self.angles_deg if self.angles_deg is not None else equispaced_angles(self.beams or DEFAULT_BEAMS)
        )
        tpps = None
        if case is not None and self.tpps:
            tpps = TPPs.default(tpp_oar_names(case))
            for name, value in self.tpps.items():
                tpps = tpps.with_value(name, value)
        tuned = bool(self.tpps) or self.tpp_agent() is not None  # the TPP objective, as METHOD §3 says
        return PlanSettings(
            angles_deg=angles,
            engine=DoseEngineSettings(bixel_mm=self.bixel_mm, dose_grid_mm=self.dose_grid_mm),
            fluence=self.fluence,
            objective_set=self.objective_set or ("tpp" if tuned else "default"),
            tpps=tpps,
            normalization_target=self.normalization_target,
            seed=self.seed,
        )

    def prescription(self) -> float | None:
        """The prescription: as given, else the highest dose level when every target has one (None
        otherwise: a target without a level would silently get another target's dose)."""
        if self.prescription_gy is not None:
            return self.prescription_gy
        if self.targets and all(name in self.target_levels_gy for name in self.targets):
            return max(self.target_levels_gy.values())
        return None

    def protocol(self, case_protocol: Protocol | None = None) -> Protocol:
        """The request's prescription, fractions and score card over a case's own (or over none)."""
        if case_protocol is None:
            prescription = self.prescription()
            if prescription is None:
                raise InputError(f"give {FIELD_WORDS['prescription_gy']}")
            return Protocol(prescription, self.fractions or DEFAULT_FRACTIONS, self.card())
        return Protocol(
            self.prescription() if self.prescription() is not None else case_protocol.prescription_gy,
            self.fractions if self.fractions is not None else case_protocol.fractions,
            self.card() if self.scorecard is not None else case_protocol.scorecard,
        )

    # -- JSON -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``format``, then every field (the patient's set fields, agents as name + options)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["patient"] = self.patient.to_dict()
        values["targets"], values["oars"] = list(self.targets), list(self.oars)
        if self.angles_deg is not None:
            values["angles_deg"] = list(self.angles_deg)
        values["agents"] = [{"name": run.name, "options": dict(run.options)} for run in self.agents]
        values["tpps"] = dict(self.tpps)
        values["target_levels_gy"] = dict(self.target_levels_gy)
        return {"format": REQUEST_FORMAT, **values}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], words: Mapping[str, str] | None = None) -> PlanRequest:
        """The validated request of :meth:`to_dict`'s output; unknown fields or formats are InputErrors."""
        if not isinstance(values, Mapping):
            raise InputError("a plan request is a JSON object")
        if values.get("format") != REQUEST_FORMAT:
            raise InputError(f"plan request format {values.get('format')!r} is not {REQUEST_FORMAT}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - {"format"})
        if unknown:
            raise InputError(
                f"unknown plan request field(s): {', '.join(unknown)} (known: {', '.join(known)})"
            )
        patient = values.get("patient", {})
        patient_fields = {f.name for f in dataclasses.fields(PatientInput)}
        if not isinstance(patient, Mapping) or set(patient) - patient_fields:
            raise InputError(f"the request's patient takes {', '.join(sorted(patient_fields))}")
        try:
            request = cls(**{k: v for k, v in values.items() if k != "format"})
        except TypeError as error:
            raise InputError(f"plan request: {error}") from None
        return request.validated(words)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be finite, got {value!r}")
    return number


def _integer(name: str, value: Any) -> int:
    number = _number(name, value)
    if number != int(number):
        raise InputError(f"{name} must be an integer, got {value!r}")
    return int(number)


_TARGET_LEVEL = re.compile(r"^(?P<name>.+?)\s*:\s*(?P<dose>\d+(?:[.,]\d*)?)\s*$")


def parse_targets(items: Sequence[str]) -> tuple[tuple[str, ...], dict[str, float]]:
    """``["PTV70:70", "PTV56:56", "GTV"]`` → the target names and their dose levels (Gy): how the command
    line, batch mode and the Slicer panel write a simultaneous integrated boost. Only a number after the
    last ':' is a level (a decimal comma is read as a point), so other names may contain ':'."""
    names, levels = [], {}
    for item in items:
        match = _TARGET_LEVEL.match(item)
        if match is None:
            names.append(item.strip())
            continue
        names.append(match["name"])
        levels[match["name"]] = float(match["dose"].replace(",", "."))
    return tuple(names), levels


def _listed(name: str, value: Any) -> Sequence[Any]:
    """``value`` as a sequence of items; one string is refused, not split into its letters."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InputError(f"{name} must be a list, got {value!r}")
    return value


def _agent_run(value: Any) -> AgentRun:
    """An AgentRun from itself, a registry name, or ``{"name": ..., "options": {...}}``."""
    if isinstance(value, AgentRun):
        return AgentRun(value.name, dict(value.options))
    if isinstance(value, str):
        return AgentRun(value)
    if (
        isinstance(value, Mapping)
        and set(value) <= {"name", "options"}
        and isinstance(value.get("name"), str)
    ):
        options = value.get("options") or {}
        if not isinstance(options, Mapping):
            raise InputError(f"options of agent {value['name']!r} must be an object, got {options!r}")
        return AgentRun(value["name"], dict(options))
    raise InputError(f"an agent is a registry name or {{'name': ..., 'options': {{...}}}}, got {value!r}")


def _one_patient_input(w: Mapping[str, str]) -> str:
    inputs = f"{w['case']}, {w['ct']} with {w['structures']}, {w['matrad']}, {w['dicom']} or {w['archive']}"
    return f"give exactly one patient input: {inputs}"


# -- running -----------------------------------------------------------------------------------------


def load_patient(request: PlanRequest, words: Mapping[str, str] | None = None) -> Case:
    """The case the request's patient input names, with its roles, dose levels and protocol applied."""
    w = {**FIELD_WORDS, **(words or {})}
    patient = request.patient
    if len(patient.sources) != 1:
        raise InputError(_one_patient_input(w))
    if patient.case is not None:
        case = load_case(patient.case, variant=patient.variant)
    elif patient.archive is not None:
        case = read_case_archive(patient.archive)
    elif patient.dicom is not None:
        case = case_from_dicom(
            patient.dicom,
            series=patient.series,
            structure_set=patient.structure_set,
            targets=request.targets,
            oars=request.oars,
            body=request.body,
            prescription_gy=request.prescription(),
            fractions=request.fractions,
            scorecard=request.card(),
            default_fractions=DEFAULT_FRACTIONS,
        )
    elif patient.matrad is not None:
        case = read_matrad(
            patient.matrad,
            targets=request.targets or None,
            oars=request.oars or None,
            body=request.body,
            prescription_gy=request.prescription(),
        )
    else:
        request.check_roles(w)
        case = case_from_files(
            patient.ct,
            patient.structures,
            labels=dict(patient.labels) or None,
            targets=request.targets,
            oars=request.oars,
            body=request.body,
            prescription_gy=request.prescription(),
            fractions=request.fractions or DEFAULT_FRACTIONS,
            scorecard=request.card(),
        )
    return _with_levels(dataclasses.replace(case, protocol=request.protocol(case.protocol)), request)


def _with_levels(case: Case, request: PlanRequest) -> Case:
    """The case with the request's target dose levels (names matched as the case spells them)."""
    if not request.target_levels_gy:
        return case
    levels = {case.structure(name).name: level for name, level in request.target_levels_gy.items()}
    structures = tuple(
        dataclasses.replace(s, dose_gy=levels[s.name]) if s.name in levels else s for s in case.structures
    )
    return dataclasses.replace(case, structures=structures)


def case_from_masks(
    request: PlanRequest,
    ct_hu: np.ndarray,
    ct_grid: Grid,
    masks: Sequence[tuple[str, np.ndarray]],
    *,
    name: str,
    description: str = "",
    words: Mapping[str, str] | None = None,
) -> Case:
    """The case of a front end that holds the CT and named masks on the CT grid itself (the Slicer
    module, from its scene): the request's roles and protocol applied, as for files."""
    request.check_roles(words)
    case = case_with_roles(
        ct_hu,
        ct_grid,
        masks,
        targets=request.targets,
        oars=request.oars,
        body=request.body,
        protocol=request.protocol(),
        name=name,
        description=description,
    )
    return _with_levels(case, request)


def run_plan(
    request: PlanRequest, case: Case | None = None, progress: ProgressCallback | None = None
) -> PlannedRequest:
    """Plan the request: load its patient (unless the front end gives ``case``), run the agents — after
    refusing, before anything runs, what the case lacks for them — and plan on the request's grid."""
    request = request.validated()
    case = case if case is not None else load_patient(request)
    angle_run, tpp_run = request.runs()
    return plan_with_agents(case, request.plan_settings(case), angle_run, tpp_run, progress)


def write_request(request: PlanRequest, path: str | Path) -> None:
    """Write the request as indented JSON through a temporary sibling file."""
    text = json.dumps(request.to_dict(), indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def read_request(path: str | Path, words: Mapping[str, str] | None = None) -> PlanRequest:
    """The validated request in a JSON file; relative patient paths are taken relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plan request {path} does not exist")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"plan request {path} is not valid JSON: {error}") from None
    request = PlanRequest.from_dict(values, words)
    return dataclasses.replace(request, patient=request.patient.resolved(path.parent))
