"""The ``radagent`` command line: list built-in cases, plan a case, train and compare agents, evaluate a dose.

Every bad input ends in one line on stderr and exit status 2; outputs are staged in a temporary folder
and moved into ``--out`` only when all of them are written, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radagent import __version__
from radagent.beams import DEFAULT_BEAMS
from radagent.envs.common import AGENT_GRID_MM
from radagent.errors import InputError
from radagent.evaluate.metrics import plan_summary
from radagent.progress import Cancelled
from radagent.request import PlanRequest

if TYPE_CHECKING:
    from radagent.agents.dqn import DQNConfig

__all__ = ["main"]

EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INPUT_ERROR, f"radagent: error: {message}\n")


def _label(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--label expects NAME=VALUE, got {text!r}")
    try:
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"label value of {name!r} must be an integer, got {value!r}"
        ) from None


def _tpp(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--tpp expects NAME=VALUE (e.g. lambda_Rectum=5), got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"value of TPP {name!r} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise argparse.ArgumentTypeError(f"value of TPP {name!r} must be finite, got {value!r}")
    return name.strip(), number


def _number_at_least(
    convert: Callable[[str], float], minimum: float, strict: bool, rule: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` (int or float) of the text, finite and ≥ ``minimum`` (> when
    ``strict``); a bad value's one-line message says it ``must be <rule>``."""
    noun = "an integer" if convert is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not np.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_positive_float = _number_at_least(float, 0.0, True, "a positive number")
_positive_int = _number_at_least(int, 1, False, "at least 1")
_non_negative_int = _number_at_least(int, 0, False, "0 or more")


def _add_case_inputs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("patient input (one of --case, --ct/--structures, --matrad, --dicom)")
    group.add_argument("--case", help="a built-in case (see `radagent cases`)")
    group.add_argument("--variant", type=_non_negative_int, help="anatomy variant of a built-in case (0)")
    group.add_argument("--ct", type=Path, help="CT volume in Hounsfield units (.nrrd / .nhdr)")
    group.add_argument("--structures", type=Path, help="Slicer segmentation (.seg.nrrd) or a labelmap NRRD")
    group.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="labelmap value of a structure",
    )
    group.add_argument("--matrad", type=Path, help="a matRad/CORT phantom (.mat with ct and cst)")
    group.add_argument(
        "--dicom",
        type=Path,
        metavar="DIR",
        help="a DICOM folder: CT series and RTSTRUCT (PTV… are targets, External/Body the body, the rest "
        "OARs unless --target/--oar/--body say otherwise; the prescription from an RTPLAN beside them)",
    )
    group.add_argument("--series", metavar="UID", help="the CT series to plan when the folder holds several")
    group.add_argument(
        "--structure-set",
        metavar="UID",
        help="the RTSTRUCT (SOP Instance UID) when several are drawn on the CT",
    )
    roles = parser.add_argument_group("structure roles and protocol (built-in cases know theirs)")
    roles.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME[:GY]",
        help="target structure name, with its own dose for a simultaneous boost, e.g. PTV56:56 (repeatable)",
    )
    roles.add_argument("--oar", action="append", default=[], help="organ-at-risk name (repeatable)")
    roles.add_argument(
        "--body", help="body/external structure (default: named like body, or the enclosing one)"
    )
    roles.add_argument(
        "--prescription", type=_positive_float, metavar="GY", help="prescribed target dose (Gy)"
    )
    roles.add_argument("--fractions", type=_positive_int, help="number of fractions")
    roles.add_argument(
        "--scorecard", help="score card to use (prostate, prostate-4oar, liver, cshape, water)"
    )


def _add_experiment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--agent-grid-mm",
        type=_positive_float,
        default=AGENT_GRID_MM,
        help=f"agent beamlet width and dose grid ({AGENT_GRID_MM:g})",
    )


# The --llm-* flags: an LLM agent's option each takes, and how the value is read.
_LLM_FLAGS: dict[str, tuple[str, Any, str]] = {
    "llm_url": (
        "llm_url",
        str,
        "the endpoint: an OpenAI-compatible base URL (…/v1) or Ollama's (RADAGENT_LLM_URL)",
    ),
    "llm_model": ("llm_model", str, "the model name (RADAGENT_LLM_MODEL)"),
    "llm_api": ("llm_api", str, "openai (chat completions; also Ollama's /v1) or ollama (/api/chat)"),
    "llm_iterations": ("iterations", int, "iterations of the agent (default 10)"),
    "llm_images": ("images", str, "on: send renderings (vision models); off: beam paths as text"),
    "llm_allow_remote": (
        "llm_allow_remote",
        bool,
        "allow an endpoint that is not a loopback address (data leaves this machine)",
    ),
    "llm_log": ("llm_log", Path, "audit log of every request and reply (JSON lines; images as hashes)"),
    "llm_dry_run": (
        "llm_dry_run",
        Path,
        "write the first prompt (text and PNGs) to this folder, send nothing",
    ),
    "llm_replay": (
        "llm_replay",
        Path,
        "answer from this audit log instead of the endpoint (reproduces a run)",
    ),
    "llm_max_calls": ("llm_max_calls", int, "stop after this many calls (paid endpoints)"),
    "llm_max_tokens": ("llm_max_total_tokens", int, "stop after this many tokens, prompt and reply"),
    "llm_context": ("llm_context_tokens", int, "the model's context window in tokens (default 8192)"),
}


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LLM agents (the API key only from RADAGENT_LLM_API_KEY)")
    for dest, (_, kind, text) in _LLM_FLAGS.items():
        flag = "--" + dest.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, action="store_true", default=None, help=text)
        elif dest == "llm_api":
            group.add_argument(flag, choices=("openai", "ollama"), help=text)
        elif dest == "llm_images":
            group.add_argument(flag, choices=("on", "off"), help=text)
        else:
            group.add_argument(flag, type=_positive_int if kind is int else kind, help=text)


def _llm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The LLM agents' option values the command line sets (paths absolute, images as a bool)."""
    values = {}
    for dest, (option, kind, _) in _LLM_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if kind is Path:
            value = str(Path(value).absolute())
        elif dest == "llm_images":
            value = value == "on"
        values[option] = value
    return values


def _with_llm_options(names: Sequence[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The agents as request entries, each agent that needs an LLM endpoint with the --llm-* values; those
    flags without such an agent are an error."""
    from radagent.agents import get_agent

    values = _llm_options(args)
    needy = [name for name in names if get_agent(name).needs.llm_endpoint]
    if values and not needy:
        flag = "--" + next(d for d in _LLM_FLAGS if getattr(args, d, None) is not None).replace("_", "-")
        raise InputError(f"{flag} applies to an LLM agent, and none is chosen")
    entries = [{"name": name, "options": dict(values) if name in needy else {}} for name in names]
    card = getattr(args, "knowledge", None)
    if card is not None:
        takers = [e for e in entries if "knowledge" in _option_names(e["name"])]
        if not takers:
            raise InputError("--knowledge applies to m2m or prior-tuner, and neither is chosen")
        for entry in takers:
            entry["options"]["knowledge"] = str(Path(card).absolute())
    return entries


def _option_names(agent: str) -> set[str]:
    """The option fields of a registered agent."""
    from dataclasses import fields

    from radagent.agents import get_agent

    return {f.name for f in fields(get_agent(agent).options_type)}


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="radagent", description="Photon IMRT planning for AI agents.")
    parser.add_argument("--version", action="version", version=f"radagent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("cases", help="list the built-in cases and their protocols")

    plan = commands.add_parser("plan", help="plan a case and write dose, DVH, metrics and a report")
    _add_case_inputs(plan)
    beams = plan.add_argument_group("beams and dose calculation")
    angles = beams.add_mutually_exclusive_group()
    angles.add_argument("--angles", help="gantry angles in degrees (IEC 61217), e.g. 0,51.4,102.9")
    angles.add_argument(
        "--beams", type=_positive_int, help=f"number of equispaced beams (default {DEFAULT_BEAMS})"
    )
    beams.add_argument(
        "--bixel-mm",
        type=_positive_float,
        help=f"beamlet width at the isocentre (default {PlanRequest.bixel_mm:g})",
    )
    beams.add_argument(
        "--dose-grid-mm",
        type=_positive_float,
        help=f"dose grid spacing (default {PlanRequest.dose_grid_mm:g})",
    )
    beams.add_argument("--fluence", choices=("optimized", "uniform"), help="fluence mode (default optimized)")
    beams.add_argument(
        "--objectives",
        choices=("default", "tpp"),
        help="objective set of optimized fluence: the default set, or the TPP objective of the agents "
        "(default: tpp with --tpp or a TPP agent, else default)",
    )
    beams.add_argument(
        "--normalize-to", metavar="TARGET", help="target whose D95 is set to its dose (primary)"
    )
    beams.add_argument(
        "--tpp",
        type=_tpp,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a treatment-planning parameter, e.g. t_PTV=1.05, lambda_Rectum=5, V_Bladder=0.5 (repeatable; "
        "the others keep the default start)",
    )
    beams.add_argument("--seed", type=_non_negative_int, help="seed for anything random (default 0)")
    agents = plan.add_argument_group("planning agents (see radagent.agents)")
    agents.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="NAME",
        help="an agent that chooses the beams (--beams may set their number) or the TPPs; repeatable, at "
        f"most one of each kind. Agents: {_agent_list()}",
    )
    agents.add_argument(
        "--agent-grid-mm",
        type=_positive_float,
        help=f"beamlet width and dose grid spacing the agents plan on (default {AGENT_GRID_MM:g})",
    )
    agents.add_argument(
        "--knowledge", type=Path, help="the knowledge card of m2m and prior-tuner (default: the shipped one)"
    )
    _add_llm_options(plan)
    plan.add_argument(
        "--request",
        type=Path,
        metavar="FILE",
        help="plan a saved request (JSON; see radagent.request) instead of the options above",
    )
    plan.add_argument("--save-request", type=Path, metavar="FILE", help="also save the request as JSON")
    plan.add_argument("--out", type=Path, required=True, help="output folder")
    plan.add_argument(
        "--export-dicom",
        type=Path,
        metavar="DIR",
        help="also write the plan as DICOM RT (RTDOSE, RTPLAN; CT and RTSTRUCT too unless the case came "
        "from --dicom). Research plans: the RTPLAN is not deliverable",
    )
    plan.add_argument(
        "--anonymize",
        action="store_true",
        help="replace the patient's identifiers in the DICOM export (a self-contained set with new UIDs)",
    )
    plan.add_argument("--quiet", action="store_true", help="no progress bars")

    train = commands.add_parser("train", help="train a DQN agent on variants of a built-in case")
    train.add_argument("--env", choices=("gantry", "tpp"), required=True, help="environment to train on")
    train.add_argument("--case", default="prostate", help="built-in case family (default prostate)")
    train.add_argument("--variants", default="0-29", help="training variants, e.g. 0-29 (default)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument(
        "--episodes", type=_positive_int, help="training budget in episodes (default: the shipped agent's)"
    )
    budget.add_argument(
        "--steps",
        type=_positive_int,
        help="training budget in environment steps (default: the shipped agent's)",
    )
    train.add_argument(
        "--pause-after",
        type=_positive_int,
        metavar="STEPS",
        help="stop after this many steps of this call; --resume continues exactly as one run would",
    )
    _add_experiment_options(train)
    train.add_argument(
        "--start", choices=("default", "random"), default="default", help="TPP env: where episodes start"
    )
    train.add_argument("--include-tpps", action="store_true", help="TPP env: TPPs in the observation")
    train.add_argument(
        "--hp",
        type=_tpp,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a DQN hyperparameter, e.g. learning_rate=1e-3, gamma=0.9, double_dqn=0 (repeatable)",
    )
    train.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default 1)")
    train.add_argument("--resume", action="store_true", help="continue the training run in --out")
    train.add_argument("--out", type=Path, required=True, help="folder for the checkpoint and training log")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    compare = commands.add_parser("compare", help="compare agents on variants of a built-in case")
    compare.add_argument("--env", choices=("gantry", "tpp"), required=True, help="environment of the agents")
    compare.add_argument("--case", default="prostate", help="built-in case family (default prostate)")
    compare.add_argument("--variants", default="30-39", help="evaluation variants (default 30-39)")
    compare.add_argument(
        "--agents",
        required=True,
        help="comma-separated agents; a DQN agent may name a checkpoint folder, e.g. dqn-gantry:runs/g1",
    )
    _add_experiment_options(compare)
    compare.add_argument(
        "--start",
        action="append",
        help="TPP agents: default, or random:N (N seeded random TPP starts, the same for every agent); "
        "repeatable (default: default)",
    )
    compare.add_argument(
        "--max-optimizations",
        type=_number_at_least(int, 2, False, "at least 2 (the start and one trial)"),
        help="the tuners' budget of fluence optimizations per run (keeps a table affordable)",
    )
    compare.add_argument(
        "--knowledge", type=Path, help="the knowledge card of m2m and prior-tuner (default: the shipped one)"
    )
    _add_llm_options(compare)
    compare.add_argument("--out", type=Path, required=True, help="output folder for the tables and plot")
    compare.add_argument("--quiet", action="store_true", help="no progress bar")

    llm = commands.add_parser("llm", help="check an LLM endpoint, or serve the bundled local model")
    llm_commands = llm.add_subparsers(dest="llm_command", required=True, parser_class=_Parser)
    check = llm_commands.add_parser("check", help="reach an endpoint and report what works")
    check.add_argument("--llm-url", help="the endpoint (RADAGENT_LLM_URL)")
    check.add_argument("--llm-model", help="the model (RADAGENT_LLM_MODEL)")
    check.add_argument("--llm-api", choices=("openai", "ollama"), default="openai")
    check.add_argument(
        "--llm-allow-remote", action="store_true", help="allow an endpoint that is not a loopback address"
    )
    serve = llm_commands.add_parser(
        "serve",
        help="serve SmolLM2-135M (text-only, weak) with llama-cpp-python: pip install 'radagent[llm-local]'",
    )
    serve.add_argument("--port", type=_positive_int, default=8080, help="port on 127.0.0.1 (8080)")
    serve.add_argument("--context", type=_positive_int, default=8192, help="context window in tokens (8192)")
    serve.add_argument("--model-path", type=Path, help="another GGUF model (default: SmolLM2-135M-Instruct)")
    serve.add_argument(
        "--threads",
        type=_positive_int,
        help="CPU threads for prompts and generation (default: the server's; give 1 per server when "
        "several share the cores)",
    )

    knowledge = commands.add_parser(
        "knowledge", help="build or show a knowledge card (what a trained TPP agent learned; M2M)"
    )
    knowledge_commands = knowledge.add_subparsers(
        dest="knowledge_command", required=True, parser_class=_Parser
    )
    build = knowledge_commands.add_parser("build", help="run the trained TPP agent and distill its episodes")
    build.add_argument("--checkpoint", help="a dqn-tpp checkpoint folder (default: the shipped agent)")
    build.add_argument("--case", default="prostate", help="the training case (prostate)")
    build.add_argument("--variants", default="0-29", help="training variants only, e.g. 0-29 (0-29)")
    build.add_argument(
        "--start",
        action="append",
        help="default, or random:N (N seeded random TPP starts per variant); repeatable (default, random:1)",
    )
    build.add_argument("--epsilon", type=float, default=0.05, help="ε of the ε-greedy episodes (0.05)")
    build.add_argument(
        "--epsilon-seeds",
        type=_non_negative_int,
        default=4,
        help="ε-greedy episodes per start besides the greedy one (4)",
    )
    build.add_argument("--min-score", type=float, help="success score (default: the score card's maximum)")
    build.add_argument("--max-steps", type=_positive_int, default=20, help="steps per episode (20)")
    build.add_argument("--out", type=Path, required=True, help="the card (JSON); its Markdown goes beside it")
    build.add_argument(
        "--episodes",
        type=Path,
        help="a JSON file of the raw episodes: written after running them, read instead when it exists",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    show = knowledge_commands.add_parser("show", help="print a card as Markdown (default: the shipped card)")
    show.add_argument("card", nargs="?", type=Path, help="a card's JSON file")

    evaluate = commands.add_parser("evaluate", help="evaluate a dose volume against the structures")
    _add_case_inputs(evaluate)
    evaluate.add_argument(
        "--dose", type=Path, required=True, help="dose volume in Gy (.nrrd) or an RTDOSE file"
    )
    evaluate.add_argument(
        "--out", type=Path, required=True, help="output folder for metrics.json and dvh.csv"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


class _Progress:
    """A tqdm bar driven by the core's progress callbacks (fraction in [0, 1], message)."""

    def __init__(self, quiet: bool) -> None:
        self._bar = None
        if not quiet:
            from tqdm import tqdm

            self._bar = tqdm(
                total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}", file=sys.stderr, disable=None
            )  # disable=None: no bar when stderr is not a terminal (logs, CI)

    def __call__(self, fraction: float, message: str) -> bool:
        if self._bar is not None:
            self._bar.set_description_str(message[:48].ljust(48))
            self._bar.n = round(1000 * fraction)
            self._bar.refresh()
        return True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _command_cases(_: argparse.Namespace) -> int:
    from radagent.cases import list_cases

    for info in list_cases():
        structures = ", ".join(f"{name} ({role})" for name, role in info.structures)
        print(
            f"{info.name:<15}{info.prescription_gy:g} Gy / {info.fractions} fx, "
            f"score card {info.scorecard!r} (max {info.max_score:g})"
        )
        print(f"{'':<15}{info.description}")
        print(f"{'':<15}structures: {structures}")
    return 0


# How the request's fields are named in this command line's error messages (radagent.request).
CLI_WORDS = {
    "case": "--case NAME",
    "ct": "--ct CT",
    "structures": "--structures SEG",
    "matrad": "--matrad FILE",
    "archive": "--request FILE",
    "dicom": "--dicom DIR",
    "series": "--series UID",
    "structure_set": "--structure-set UID",
    "targets": "target structure with --target",
    "oars": "organ at risk with --oar",
    "body": "body with --body",
    "labels": "labelmap value with --label",
    "prescription_gy": "the prescription with --prescription GY",
    "agent": "--agent",
    "angles_deg": "--angles",
    "tpps": "--tpp",
    "beams": "--beams",
    "fluence": "--fluence",
}
_PLAN_OPTIONS = (
    *_LLM_FLAGS,
    "angles",
    "beams",
    "bixel_mm",
    "dose_grid_mm",
    "fluence",
    "objectives",
    "normalize_to",
    "tpp",
    "seed",
    "agent",
    "agent_grid_mm",
)
_CASE_OPTIONS = (
    "case",
    "variant",
    "ct",
    "structures",
    "label",
    "matrad",
    "dicom",
    "series",
    "structure_set",
    "target",
    "oar",
    "body",
)
_PROTOCOL_OPTIONS = ("prescription", "fractions", "scorecard")


def _agent_list() -> str:
    from radagent.agents import list_agents

    return ", ".join(f"{spec.name} ({spec.kind})" for spec in list_agents())


def _request(args: argparse.Namespace) -> PlanRequest:
    """The validated plan request of the command line's options (those a command lacks stay unset)."""
    from radagent.beams import parse_angles
    from radagent.request import PatientInput, parse_targets

    def given(name: str) -> Any:
        return getattr(args, name, None)

    def path(name: str) -> str | None:
        value = given(name)
        return str(Path(value).absolute()) if value is not None else None

    try:
        angles = parse_angles(args.angles) if given("angles") is not None else None
    except ValueError as error:
        raise InputError(str(error)) from None
    patient = PatientInput(
        case=args.case,
        variant=args.variant or 0,
        ct=path("ct"),
        structures=path("structures"),
        labels=dict(args.label),
        matrad=path("matrad"),
        dicom=path("dicom"),
        series=given("series"),
        structure_set=given("structure_set"),
    )
    values = {
        "bixel_mm": given("bixel_mm"),
        "dose_grid_mm": given("dose_grid_mm"),
        "agent_grid_mm": given("agent_grid_mm"),
        "fluence": given("fluence"),
        "seed": given("seed"),
    }
    targets, levels = parse_targets(args.target)
    request = PlanRequest(
        patient=patient,
        targets=targets,
        target_levels_gy=levels,
        objective_set=given("objectives"),
        normalization_target=given("normalize_to"),
        oars=tuple(args.oar),
        body=args.body,
        prescription_gy=args.prescription,
        fractions=args.fractions,
        scorecard=args.scorecard,
        angles_deg=angles,
        beams=given("beams"),
        agents=tuple(_with_llm_options(given("agent") or (), args)),
        tpps=dict(given("tpp") or ()),
        **{name: value for name, value in values.items() if value is not None},
    )
    return request.validated(CLI_WORDS)


def _plan_request(args: argparse.Namespace) -> PlanRequest:
    """The request of ``plan``: from ``--request FILE`` alone, or from the options."""
    from radagent.request import read_request

    if args.request is None:
        return _request(args)
    options = [*_CASE_OPTIONS, *_PROTOCOL_OPTIONS, *_PLAN_OPTIONS]
    given = [name for name in options if getattr(args, name) not in (None, [])]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise InputError(f"--request holds the whole request; {flag} cannot be given with it")
    return read_request(args.request, CLI_WORDS)


def _command_plan(args: argparse.Namespace) -> int:
    from radagent.io.results import staged_folder, write_plan_outputs
    from radagent.plan import overlap_warnings
    from radagent.request import load_patient, run_plan, write_request

    request = _plan_request(args)
    if args.save_request is not None and not args.save_request.absolute().parent.is_dir():
        raise InputError(f"--save-request {args.save_request}: its folder does not exist")
    if args.anonymize and args.export_dicom is None:
        raise InputError("--anonymize applies to --export-dicom DIR")
    if args.anonymize and args.save_request is not None:
        raise InputError("--save-request records the input's paths and UIDs; it cannot go with --anonymize")
    case = load_patient(request, CLI_WORDS)
    if args.export_dicom is not None:
        from radagent.io.dicom_write import check_export

        check_export(args.export_dicom, case, anonymize=args.anonymize, source=request.patient.dicom)
    if args.anonymize:  # the outputs in --out name the case: no pseudonym derived from the patient's UIDs
        case = dataclasses.replace(case, name="anonymized", description="")
    problems = request.problems(case)
    if problems:  # before any note or warning: a refused request gets one line
        raise InputError("; ".join(problems))
    _print_import_notes(case, args.quiet)
    for warning in overlap_warnings(case, request.plan_settings(case)):  # before the minutes of planning
        print(f"radagent: warning: {warning}", file=sys.stderr)
    with staged_folder(args.out, "--out") as staging:
        progress = _Progress(args.quiet)
        try:
            planned = run_plan(request, case, progress)
        finally:
            progress.close()
        result = planned.plan
        metrics = planned.metrics()
        write_plan_outputs(
            staging,
            case,
            result.dose_ct_gy,
            result.evaluation.dvh_table(),
            metrics,
            planned.description(),
        )
        if args.export_dicom is not None:  # inside --out's staging: a failed export leaves neither
            from radagent.io.dicom_write import write_dicom_plan

            with staged_folder(args.export_dicom, "--export-dicom") as dicom_staging:
                write_dicom_plan(
                    dicom_staging, case, result.dose_ct_gy, planned.description(), anonymize=args.anonymize
                )
    if args.save_request is not None:
        write_request(request, args.save_request)
    if not args.quiet:
        print(
            f"{case.name}: {len(result.settings.angles_deg)} beams, {metrics['dij']['n_beamlets']} beamlets, "
            f"{plan_summary(metrics['plan'])}, {metrics['timing_s']['total']:.1f} s → {args.out}"
        )
    return 0


def _print_import_notes(case: Any, quiet: bool) -> None:
    """What a DICOM import left out or assumed, one line each on stderr."""
    if case.dicom is not None and not quiet:
        for note in case.dicom.notes:
            print(f"radagent: note: {note}", file=sys.stderr)


def _command_evaluate(args: argparse.Namespace) -> int:
    from radagent.evaluate.metrics import evaluate_plan
    from radagent.geometry import resample
    from radagent.io.dicom_read import is_dicom_file, read_rtdose
    from radagent.io.nrrd import read_volume
    from radagent.io.results import staged_folder, write_dvh_csv, write_json
    from radagent.request import load_patient

    case = load_patient(_request(args), CLI_WORDS)
    _print_import_notes(case, args.quiet)
    frame = case.dicom.frame_of_reference_uid if case.dicom is not None else None
    dose, dose_grid = read_rtdose(args.dose, frame) if is_dicom_file(args.dose) else read_volume(args.dose)
    if not np.all(np.isfinite(dose)):
        raise InputError(f"dose volume {args.dose} contains NaN or infinite values")
    if np.any(dose < 0):
        raise InputError(f"dose volume {args.dose} contains negative doses")
    dose_ct = (
        dose.astype(np.float32) if dose_grid.same_as(case.grid) else resample(dose, dose_grid, case.grid)
    )
    evaluation = evaluate_plan(case, dose_ct)
    metrics = evaluation.to_dict()
    with staged_folder(args.out, "--out") as staging:
        write_json(staging / "metrics.json", metrics)
        write_dvh_csv(staging / "dvh.csv", evaluation.dvh_table())
    if not args.quiet:
        print(f"{case.name}: {plan_summary(metrics['plan'])} → {args.out}")
    return 0


def _hyperparameters(env: str, args: argparse.Namespace) -> DQNConfig:
    """The environment's DQN hyperparameters (what the shipped agent used) with the command line's
    budget and ``--hp``."""
    from dataclasses import fields

    from radagent.agents.dqn import DQN_CONFIGS

    config_type = DQN_CONFIGS[env]
    values: dict[str, Any] = {"seed": args.seed, "torch_threads": args.threads}
    if args.steps is not None or args.episodes is not None:
        values |= {"total_steps": args.steps, "total_episodes": args.episodes}
    fixed = ("seed", "torch_threads", "total_steps", "total_episodes", "hidden", "device")
    types = {f.name: str(f.type) for f in fields(config_type) if f.name not in fixed}
    for name, value in args.hp:
        if name not in types:
            raise InputError(f"--hp {name}: not a DQN hyperparameter (known: {', '.join(types)})")
        kind = types[name]
        values[name] = bool(value) if kind == "bool" else int(value) if kind == "int" else value
    return config_type(**values)


def _command_train(args: argparse.Namespace) -> int:
    import time

    from radagent.agents import trained_agent

    agent = trained_agent(args.env)
    try:
        from radagent.agents.dqn import train_dqn
    except ImportError as error:
        raise InputError(
            f"training needs {error.name}, which this Python cannot import: "
            f"pip install '{agent.needs.install}'"
        ) from None
    from radagent.experiments import make_env, parse_variants, plot_learning_curves

    variants = parse_variants(args.variants)
    config = _hyperparameters(args.env, args)
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    if args.resume and not (args.out / "training_state.pt").is_file():  # train_dqn checks the rest
        raise InputError(f"--resume: {args.out} holds no training run to continue")
    if not args.resume and args.out.is_dir() and any(args.out.iterdir()):
        raise InputError(f"--out {args.out} is not empty; use --resume to continue a run there")
    env = make_env(
        args.env,
        args.case,
        variants,
        grid_mm=args.agent_grid_mm,
        start=args.start,
        include_tpps=args.include_tpps,
    )
    run_info = {
        "case": args.case,
        "variants": args.variants,
        "command": "radagent " + " ".join(sys.argv[1:]),
        "radagent": __version__,
    }
    progress = _Progress(args.quiet)
    start = time.perf_counter()
    try:
        checkpoint = train_dqn(
            env,
            config,
            args.out,
            resume=args.resume,
            pause_after=args.pause_after,
            agent=agent.name,
            run_info=run_info,
            progress=progress,
        )
    finally:
        progress.close()
        env.close()
    curve = args.out / "learning_curve.png"
    plot_learning_curves({agent.name: args.out / "train_log.jsonl"}, curve, args.env)
    training = checkpoint.record["training"]
    if not args.quiet:
        print(
            f"{agent.name}: {training['step']} steps, {training['episode']} episodes, "
            f"{time.perf_counter() - start:.0f} s → {args.out}"
        )
    return 0


def _command_compare(args: argparse.Namespace) -> int:
    from radagent.agents import get_agent
    from radagent.agents.knowledge import parse_starts, read_card
    from radagent.cases import load_case
    from radagent.experiments import (
        comparison_rows,
        parse_agents,
        parse_variants,
        plot_learning_curves,
        plot_scores_by_step,
        run_comparison,
        write_comparison,
    )
    from radagent.io.results import staged_folder

    variants = parse_variants(args.variants)
    agents = parse_agents(args.agents, args.env, _llm_options(args))
    if args.start is not None and args.env != "tpp":
        raise InputError("--start applies to the TPP environment")
    starts = parse_starts([s if s != "random" else "random:1" for s in args.start or ["default"]])
    takers = [a.label for a in agents if "knowledge" in _option_names(a.name)]
    if args.knowledge is not None and not takers:
        raise InputError("--knowledge applies to m2m or prior-tuner, and neither is chosen")
    if takers:
        read_card(args.knowledge)  # a missing or bad card fails before any agent runs
    load_case(args.case, variants[0])  # an unknown case fails before any agent runs
    with staged_folder(args.out, "--out") as staging:
        progress = _Progress(args.quiet)
        try:
            results = run_comparison(
                agents,
                args.case,
                variants,
                grid_mm=args.agent_grid_mm,
                starts=starts,
                seed=args.seed,
                agent_options={
                    "max_optimizations": args.max_optimizations,
                    "knowledge": str(args.knowledge) if args.knowledge is not None else None,
                },
                progress=progress,
            )
        finally:
            progress.close()
        meta = {
            "env": args.env,
            "case": args.case,
            "variants": args.variants,
            "agents": [a.label for a in agents],
            "starts": [str(start) for start in starts],
            "seed": args.seed,
            "max_optimizations": args.max_optimizations,
            "knowledge": str(args.knowledge) if args.knowledge is not None else None,
            "agent_grid_mm": args.agent_grid_mm,
            "radagent": __version__,
        }
        rows = comparison_rows(results)
        write_comparison(staging, args.env, rows, meta)
        plot_scores_by_step(rows, staging / "score_by_step.png")
        logs = {}
        for agent in agents:
            trained = get_agent(agent.name).needs.trained
            if trained is not None:
                log = trained.folder(agent.checkpoint) / "train_log.jsonl"
                if log.is_file():
                    logs[agent.label] = log
        if logs:
            plot_learning_curves(logs, staging / "learning_curve.png", args.env)
    if not args.quiet:
        print((args.out / "comparison.md").read_text())
    return 0


def _command_llm(args: argparse.Namespace) -> int:
    from radagent.llm.local import check_endpoint, serve_local_model

    if args.llm_command == "serve":
        return serve_local_model(args.port, args.context, args.model_path, args.threads)
    for line in check_endpoint(args.llm_url, args.llm_model, args.llm_api, args.llm_allow_remote):
        print(line)
    return 0


def _command_knowledge(args: argparse.Namespace) -> int:
    import json

    from radagent.agents.knowledge import (
        CardSettings,
        build_card,
        card_markdown,
        parse_starts,
        read_card,
        run_card_episodes,
        write_card,
    )
    from radagent.experiments import parse_variants
    from radagent.io.atomic import write_text_atomic

    if args.knowledge_command == "show":
        print(card_markdown(read_card(args.card).data), end="")
        return 0
    if args.out.suffix != ".json":
        raise InputError(f"--out must name a .json file, got {args.out}")
    settings = CardSettings(
        checkpoint=args.checkpoint,
        case=args.case,
        variants=parse_variants(args.variants),
        starts=parse_starts(args.start or ["default", "random:1"]),
        epsilon=args.epsilon,
        epsilon_seeds=args.epsilon_seeds,
        min_score=args.min_score,
        max_steps=args.max_steps,
    )
    if args.episodes is not None and args.episodes.exists():
        try:
            episodes = json.loads(args.episodes.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"saved episodes {args.episodes} cannot be read: {error}") from None
    else:
        progress = _Progress(args.quiet)
        try:
            episodes = run_card_episodes(settings, progress)
        finally:
            progress.close()
        if args.episodes is not None:
            write_text_atomic(args.episodes, json.dumps(episodes) + "\n")
    card = build_card(settings, episodes=episodes)
    markdown = write_card(card, args.out)
    if not args.quiet:
        counts = card["episodes"]
        print(f"{counts['successful']} of {counts['total']} episodes successful → {args.out}, {markdown}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "cases": _command_cases,
    "plan": _command_plan,
    "train": _command_train,
    "compare": _command_compare,
    "evaluate": _command_evaluate,
    "llm": _command_llm,
    "knowledge": _command_knowledge,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``radagent`` console script; returns the process exit status."""
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exit_request:  # argparse already printed its one-line message or the help
        return int(exit_request.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except (InputError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
        print(f"radagent: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except Cancelled:
        print("radagent: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("radagent: interrupted", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
