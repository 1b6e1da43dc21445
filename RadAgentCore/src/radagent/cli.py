"""The ``radagent`` command line: list built-in cases, plan a case, train and compare agents, evaluate a dose.

Every bad input ends in one line on stderr and exit status 2; outputs are staged in a temporary folder
and moved into ``--out`` only when all of them are written, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radagent import __version__
from radagent.errors import InputError
from radagent.progress import Cancelled

if TYPE_CHECKING:
    from radagent.agents import AgentSpec

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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _add_case_inputs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("patient input (one of --case, --ct/--structures, --matrad)")
    group.add_argument("--case", help="a built-in case (see `radagent cases`)")
    group.add_argument(
        "--variant", type=_non_negative_int, default=0, help="anatomy variant of a built-in case"
    )
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
    roles = parser.add_argument_group("structure roles and protocol (built-in cases know theirs)")
    roles.add_argument("--target", action="append", default=[], help="target structure name (repeatable)")
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
    parser.add_argument(
        "--start", choices=("default", "random"), default="default", help="TPP env: where tuning starts"
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--agent-grid-mm", type=_positive_float, default=5.0, help="agent beamlet width and dose grid (5)"
    )


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
    angles.add_argument("--beams", type=_positive_int, help="number of equispaced beams (default 7)")
    beams.add_argument("--bixel-mm", type=_positive_float, default=5.0, help="beamlet width at the isocentre")
    beams.add_argument("--dose-grid-mm", type=_positive_float, default=3.0, help="dose grid spacing")
    beams.add_argument("--fluence", choices=("optimized", "uniform"), default="optimized")
    beams.add_argument(
        "--tpp",
        type=_tpp,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a treatment-planning parameter, e.g. t_PTV=1.05, lambda_Rectum=5, V_Bladder=0.5 (repeatable; "
        "the others keep the default start)",
    )
    beams.add_argument("--seed", type=_non_negative_int, default=0, help="seed for anything random")
    agents = plan.add_argument_group("planning agents (see radagent.agents)")
    agents.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="NAME",
        help="an agent that chooses the beams (e.g. greedy; --beams may set their number) or the TPPs "
        "(e.g. tuner); repeatable, at most one of each kind",
    )
    agents.add_argument(
        "--agent-grid-mm",
        type=_positive_float,
        default=5.0,
        help="beamlet width and dose grid spacing the agents plan on (default 5)",
    )
    plan.add_argument("--out", type=Path, required=True, help="output folder")
    plan.add_argument("--quiet", action="store_true", help="no progress bars")

    train = commands.add_parser("train", help="train a DQN agent on variants of a built-in case")
    train.add_argument("--env", choices=("gantry", "tpp"), required=True, help="environment to train on")
    train.add_argument("--case", default="prostate", help="built-in case family (default prostate)")
    train.add_argument("--variants", default="0-29", help="training variants, e.g. 0-29 (default)")
    budget = train.add_mutually_exclusive_group(required=True)
    budget.add_argument("--episodes", type=_positive_int, help="training budget in episodes")
    budget.add_argument("--steps", type=_positive_int, help="training budget in environment steps")
    _add_experiment_options(train)
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
    compare.add_argument("--out", type=Path, required=True, help="output folder for the tables and plot")
    compare.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="evaluate a dose volume against the structures")
    _add_case_inputs(evaluate)
    evaluate.add_argument("--dose", type=Path, required=True, help="dose volume in Gy (.nrrd)")
    evaluate.add_argument(
        "--out", type=Path, required=True, help="output folder for metrics.json and dvh.csv"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _scorecard(name: str | None):
    if name is None:
        return None
    from radagent.evaluate.scorecard import card_by_name

    return card_by_name(name)


def _with_protocol(case, args: argparse.Namespace):
    """The case with the command line's prescription, fractions and score card, where given."""
    import dataclasses

    changes = {}
    if args.prescription is not None:
        changes["prescription_gy"] = args.prescription
    if args.fractions is not None:
        changes["fractions"] = args.fractions
    if args.scorecard is not None:
        changes["scorecard"] = _scorecard(args.scorecard)
    if not changes:
        return case
    return dataclasses.replace(case, protocol=dataclasses.replace(case.protocol, **changes))


def _load_case(args: argparse.Namespace):
    """The Case named by the command line's patient inputs, validated."""
    sources = [
        args.case is not None,
        args.ct is not None or args.structures is not None,
        args.matrad is not None,
    ]
    if sum(sources) != 1:
        raise InputError(
            "give exactly one patient input: --case NAME, --ct CT --structures SEG, or --matrad FILE"
        )
    if args.case is not None:
        from radagent.cases import load_case

        overrides = [o for o in ("target", "oar", "body", "label") if getattr(args, o)]
        if overrides:
            raise InputError(
                f"--{overrides[0]} does not apply to built-in cases, which know their structures"
            )
        return _with_protocol(load_case(args.case, variant=args.variant), args)
    if args.matrad is not None:
        from radagent.io.matrad import read_matrad

        case = read_matrad(
            args.matrad,
            targets=args.target or None,
            oars=args.oar or None,
            body=args.body,
            prescription_gy=args.prescription,
        )
        return _with_protocol(case, args)
    if args.ct is None or args.structures is None:
        raise InputError("--ct and --structures go together")
    if not args.target:
        raise InputError("name the target structure(s) with --target")
    if args.prescription is None:
        raise InputError("give the prescription with --prescription GY")
    from radagent.io.inputs import case_from_files

    return case_from_files(
        args.ct,
        args.structures,
        labels=dict(args.label) or None,
        targets=args.target,
        oars=args.oar,
        body=args.body,
        prescription_gy=args.prescription,
        fractions=args.fractions or 1,
        scorecard=_scorecard(args.scorecard),
    )


@contextlib.contextmanager
def _staged_output(out: Path) -> Iterator[Path]:
    """A temporary folder whose files are moved into ``out`` (created with its parents) only on success."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out {out} lies under {existing}, which is not a folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=existing))
    try:
        yield staging
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def _summary_lines(metrics: dict[str, Any]) -> list[str]:
    plan = metrics["plan"]
    lines = [
        f"prescription {plan['prescription_gy']:g} Gy",
        f"score {plan['score']:.2f} / {plan['score_max']:g}"
        if plan.get("score") is not None
        else "no score card",
        f"reward {plan['reward']:.3f}",
        f"HI {plan['homogeneity_index']:.3f}   CI {plan['conformity_index']:.3f}",
        "",
        f"{'structure':<14}{'mean':>7}{'D2':>7}{'D95':>7}",
    ]
    for name, values in metrics["structures"].items():
        lines.append(
            f"{name[:13]:<14}{values['mean_gy']:>7.1f}{values['d2_gy']:>7.1f}{values['d95_gy']:>7.1f}"
        )
    for criterion in plan.get("criteria", []):
        lines.append(f"{criterion['label'][:28]:<29}{criterion['value']:.3f} → {criterion['subscore']:.2f}")
    return lines


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


def _plan_agents(args: argparse.Namespace) -> dict[str, AgentSpec]:
    """The ``--agent`` specs by kind, refusing two of one kind and options the agents would override."""
    from radagent.agents import get_agent

    specs: dict[str, AgentSpec] = {}
    for name in args.agent:
        spec = get_agent(name)
        if spec.kind in specs:
            raise InputError(
                f"--agent {specs[spec.kind].name} and --agent {name} both choose the {spec.kind}; "
                "give at most one agent of each kind"
            )
        specs[spec.kind] = spec
    if "angles" in specs and args.angles is not None:
        raise InputError(f"--angles conflicts with --agent {specs['angles'].name}, which chooses the beams")
    if "tpp" in specs and (args.tpp or args.fluence == "uniform"):
        option = "--tpp" if args.tpp else "--fluence uniform"
        raise InputError(f"{option} conflicts with --agent {specs['tpp'].name}, which chooses the TPPs")
    return specs


def _command_plan(args: argparse.Namespace) -> int:
    from radagent.agents.pipeline import agent_runs, plan_with_agents
    from radagent.beams import equispaced_angles, parse_angles
    from radagent.dose import DoseEngineSettings
    from radagent.io.nrrd import write_volume
    from radagent.io.results import write_dvh_csv, write_json
    from radagent.plan import PlanSettings
    from radagent.report import write_report

    try:
        angles = parse_angles(args.angles) if args.angles is not None else equispaced_angles(args.beams or 7)
    except ValueError as error:
        raise InputError(str(error)) from None
    specs = _plan_agents(args)
    case = _load_case(args)
    tpps = None
    if args.tpp:
        if args.fluence == "uniform":
            raise InputError("--tpp applies to optimized fluence, not --fluence uniform")
        from radagent.optimize import TPPs, tpp_oar_names

        tpps = TPPs.default(tpp_oar_names(case))
        for name, value in args.tpp:
            tpps = tpps.with_value(name, value)
    settings = PlanSettings(
        angles_deg=angles,
        engine=DoseEngineSettings(bixel_mm=args.bixel_mm, dose_grid_mm=args.dose_grid_mm),
        fluence=args.fluence,
        tpps=tpps,
        seed=args.seed,
    )
    angle_run, tpp_run = agent_runs(
        specs["angles"].name if "angles" in specs else None,
        specs["tpp"].name if "tpp" in specs else None,
        seed=args.seed,
        agent_grid_mm=args.agent_grid_mm,
        beams=args.beams,
    )
    with _staged_output(args.out) as staging:
        progress = _Progress(args.quiet)
        try:
            planned = plan_with_agents(case, settings, angle_run, tpp_run, progress)
        finally:
            progress.close()
        result, agent_results = planned.plan, planned.agents
        settings = result.settings
        metrics = result.metrics()
        write_volume(staging / "dose.nrrd", result.dose_ct_gy.astype(np.float32), case.grid)
        table = result.evaluation.dvh_table()
        write_dvh_csv(staging / "dvh.csv", table)
        description = result.plan_description()
        if agent_results:
            description["agents"] = [r.to_dict() for r in agent_results]
        write_json(staging / "plan.json", description)
        write_json(staging / "metrics.json", metrics)
        write_report(
            staging / "report.png",
            case,
            result.dose_ct_gy,
            result.evaluation.dvh_curves(),
            _summary_lines(metrics),
        )
    if not args.quiet:
        plan = metrics["plan"]
        score = f"score {plan['score']:.2f}/{plan['score_max']:g}, " if plan.get("score") is not None else ""
        print(
            f"{case.name}: {len(settings.angles_deg)} beams, {metrics['dij']['n_beamlets']} beamlets, {score}"
            f"reward {plan['reward']:.3f}, {metrics['timing_s']['total']:.1f} s → {args.out}"
        )
    return 0


def _command_evaluate(args: argparse.Namespace) -> int:
    from radagent.evaluate.metrics import evaluate_plan
    from radagent.geometry import resample
    from radagent.io.nrrd import read_volume
    from radagent.io.results import write_dvh_csv, write_json

    case = _load_case(args)
    dose, dose_grid = read_volume(args.dose)
    if not np.all(np.isfinite(dose)):
        raise InputError(f"dose volume {args.dose} contains NaN or infinite values")
    if np.any(dose < 0):
        raise InputError(f"dose volume {args.dose} contains negative doses")
    dose_ct = (
        dose.astype(np.float32) if dose_grid.same_as(case.grid) else resample(dose, dose_grid, case.grid)
    )
    evaluation = evaluate_plan(case, dose_ct)
    with _staged_output(args.out) as staging:
        write_json(staging / "metrics.json", evaluation.to_dict())
        write_dvh_csv(staging / "dvh.csv", evaluation.dvh_table())
    if not args.quiet:
        plan = evaluation.to_dict()["plan"]
        print(f"{case.name}: score {plan['score']}, reward {plan['reward']:.3f} → {args.out}")
    return 0


def _hyperparameters(env: str, args: argparse.Namespace) -> dict[str, Any]:
    """The environment's default DQN hyperparameters with the command line's budget and ``--hp``."""
    from dataclasses import fields

    from radagent.agents.dqn import DQNConfig, default_hyperparameters

    values = default_hyperparameters(env) | {"seed": args.seed, "torch_threads": args.threads}
    values |= {"total_steps": args.steps, "total_episodes": args.episodes}
    fixed = ("seed", "torch_threads", "total_steps", "total_episodes", "hidden", "device")
    types = {f.name: str(f.type) for f in fields(DQNConfig) if f.name not in fixed}
    for name, value in args.hp:
        if name not in types:
            raise InputError(f"--hp {name}: not a DQN hyperparameter (known: {', '.join(types)})")
        kind = types[name]
        values[name] = bool(value) if kind == "bool" else int(value) if kind == "int" else value
    return values


def _command_train(args: argparse.Namespace) -> int:
    import time

    try:
        from radagent.agents.dqn import DQNConfig, train_dqn
    except ImportError as error:
        raise InputError(
            f"training needs torch ({error.name} is missing): pip install 'radagent[learn]'"
        ) from None
    from radagent.experiments import make_env, parse_variants, plot_learning_curves

    variants = parse_variants(args.variants)
    config = DQNConfig(**_hyperparameters(args.env, args))
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    if args.resume and not (args.out / "training_state.pt").is_file():
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
            env, config, args.out, resume=args.resume, run_info=run_info, progress=progress
        )
    finally:
        progress.close()
        env.close()
    curve = args.out / "learning_curve.png"
    plot_learning_curves({f"dqn-{args.env}": args.out / "train_log.jsonl"}, curve, args.env)
    training = checkpoint.record["training"]
    if not args.quiet:
        print(
            f"dqn-{args.env}: {training['step']} steps, {training['episode']} episodes, "
            f"{time.perf_counter() - start:.0f} s → {args.out}"
        )
    return 0


def _command_compare(args: argparse.Namespace) -> int:
    from radagent.agents.learned import shipped_checkpoint
    from radagent.cases import load_case
    from radagent.experiments import (
        comparison_rows,
        parse_agents,
        parse_variants,
        plot_learning_curves,
        run_comparison,
        write_comparison,
    )

    variants = parse_variants(args.variants)
    agents = parse_agents(args.agents, args.env)
    load_case(args.case, variants[0])  # an unknown case fails before any agent runs
    with _staged_output(args.out) as staging:
        progress = _Progress(args.quiet)
        try:
            results = run_comparison(
                agents,
                args.case,
                variants,
                grid_mm=args.agent_grid_mm,
                start=args.start,
                seed=args.seed,
                progress=progress,
            )
        finally:
            progress.close()
        meta = {
            "env": args.env,
            "case": args.case,
            "variants": args.variants,
            "agents": [a.label for a in agents],
            "start": args.start,
            "seed": args.seed,
            "agent_grid_mm": args.agent_grid_mm,
            "radagent": __version__,
        }
        write_comparison(staging, args.env, comparison_rows(results), meta)
        logs = {}
        for agent in agents:
            if agent.name.startswith("dqn-"):
                folder = Path(agent.checkpoint) if agent.checkpoint else shipped_checkpoint(args.env)
                if (folder / "train_log.jsonl").is_file():
                    logs[agent.label] = folder / "train_log.jsonl"
        if logs:
            plot_learning_curves(logs, staging / "learning_curve.png", args.env)
    if not args.quiet:
        print((args.out / "comparison.md").read_text())
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "cases": _command_cases,
    "plan": _command_plan,
    "train": _command_train,
    "compare": _command_compare,
    "evaluate": _command_evaluate,
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
