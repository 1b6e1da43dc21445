"""Batch planning: one case, or every case folder of a directory, from files to dose and metrics.

Run inside Slicer with ``Slicer --no-main-window --python-script RadAgentSlicerBatch.py -- ARGS`` or
outside it with any Python that has ``radagent`` and ``slicer-core``. The arguments are parsed into the
core's plan request by :class:`RadAgentSlicerLib.logic.PlanningLogic`, as the panel's choices are. Each
case gets its own scene and output folder with the CLI's files (``dose.nrrd``, ``dvh.csv``,
``metrics.json``, ``plan.json``; optionally ``scene.mrb``), written by the core's writer to a temporary
folder and moved in on success; with ``--export-dicom`` also the plan as DICOM RT (CT, RTSTRUCT, RTPLAN,
RTDOSE) by the core's DICOM writer, one sub-folder per case as for ``--out``. Exit status: 0 when every
case was planned, 1 when any case failed (the others still run), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import slicer

from radagent.agents import list_agents
from radagent.beams import DEFAULT_BEAMS
from radagent.envs.common import AGENT_GRID_MM
from radagent.errors import InputError
from radagent.evaluate.metrics import plan_summary
from radagent.io.results import staged_folder, write_plan_outputs
from radagent.request import DEFAULT_FRACTIONS, PlanRequest
from RadAgentSlicerLib.logic import PlanningLogic, PlanNodes

__all__ = [
    "export_dicom",
    "find_cases",
    "load_inputs",
    "main",
    "new_scene",
    "plan_case_files",
    "save_results",
]

EXIT_OK, EXIT_CASE_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2
SEGMENTATION_SUFFIX = ".seg.nrrd"
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


class _Parser(argparse.ArgumentParser):
    """argparse reporting a usage error as one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_ARGUMENTS, f"radagent-batch: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="RadAgentSlicerBatch", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ct", type=Path, help="CT volume file (one case; needs --segmentation)")
    source.add_argument(
        "--cases", type=Path, help="directory of case folders, each with one CT and one .seg.nrrd"
    )
    parser.add_argument("--segmentation", type=Path, help="segmentation file (.seg.nrrd) of --ct")
    parser.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="NAME[:GY]",
        help="target segment, with its own dose for a simultaneous boost, e.g. PTV56:56 (repeatable)",
    )
    parser.add_argument("--oar", action="append", default=[], help="organ-at-risk segment (repeatable)")
    parser.add_argument("--body", help="body segment (default: named like body, else from the CT)")
    parser.add_argument(
        "--prescription",
        type=float,
        metavar="GY",
        help="target dose (Gy; default: the highest NAME:GY level)",
    )
    parser.add_argument("--fractions", type=int, help=f"number of fractions (default {DEFAULT_FRACTIONS})")
    parser.add_argument("--scorecard", help="score card (prostate, prostate-4oar, liver, cshape, water)")
    agents = ", ".join(f"{spec.name} ({spec.kind})" for spec in list_agents())
    parser.add_argument(
        "--agent",
        help=f"an angle or TPP agent of the registry (default none: equispaced beams). Agents: {agents}",
    )
    parser.add_argument("--tpp-agent", help="a TPP agent, run on the angle agent's beams")
    parser.add_argument("--beams", type=int, help=f"number of beams (default {DEFAULT_BEAMS})")
    parser.add_argument(
        "--dose-grid-mm", type=float, help=f"dose grid spacing (default {PlanRequest.dose_grid_mm:g})"
    )
    parser.add_argument(
        "--bixel-mm", type=float, help=f"beamlet width at the isocentre (default {PlanRequest.bixel_mm:g})"
    )
    parser.add_argument(
        "--agent-grid-mm", type=float, help=f"the agents' beamlet width and dose grid ({AGENT_GRID_MM:g})"
    )
    parser.add_argument("--seed", type=int, help=f"seed for anything random (default {PlanRequest.seed})")
    parser.add_argument(
        "--objectives", choices=("default", "tpp"), help="objective set (default: tpp with a TPP agent)"
    )
    parser.add_argument("--normalize-to", metavar="TARGET", help="target whose D95 is set to its dose")
    parser.add_argument("--save-scene", action="store_true", help="also save each case's scene.mrb")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per case)")
    parser.add_argument(
        "--export-dicom",
        type=Path,
        metavar="DIR",
        help="also write each plan as DICOM RT (one sub-folder per case); research plans, not deliverable",
    )
    parser.add_argument(
        "--anonymize", action="store_true", help="replace patient identifiers in the DICOM export"
    )
    return parser


def new_scene(cache_folder: str | Path) -> Any:
    """An empty scene able to read and write files and bundles (``.mrb``) outside the Slicer app too;
    bundles unpack into ``cache_folder``, which the caller owns (and removes)."""
    Path(cache_folder).mkdir(parents=True, exist_ok=True)
    scene = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(cache_folder))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)
    return scene


def load_inputs(scene: Any, ct_path: Path, segmentation_path: Path) -> tuple[Any, Any]:
    """Read the CT and the segmentation files into ``scene`` through their storage nodes."""
    volume = ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode", "a volume")
    segments = ("vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", "a segmentation")
    return _read_node(scene, ct_path, *volume), _read_node(scene, segmentation_path, *segments)


def _read_node(scene: Any, path: Path, node_class: str, storage_class: str, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    node = scene.AddNewNodeByClass(node_class, _stem(path))
    storage = scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise InputError(f"{path} could not be read as {what}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def save_results(scene: Any, result: PlanNodes, folder: Path, save_scene: bool) -> None:
    """Write the plan's files into ``folder`` with the core's writer (as the CLI does, without the
    report figure), and the scene as ``scene.mrb`` when asked."""
    write_plan_outputs(
        folder,
        result.case,
        slicer.util.arrayFromVolume(result.doseVolumeNode),
        result.dvh,
        result.metrics,
        result.description,
        report=False,
    )
    if save_scene and not scene.WriteToMRB(str(folder / "scene.mrb")):
        raise OSError(f"could not write {folder / 'scene.mrb'}")


def plan_case_files(
    ct_path: Path,
    segmentation_path: Path,
    out: Path,
    args: argparse.Namespace,
    dicom_out: Path | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Plan one case from files into ``out`` (and its DICOM RT into ``dicom_out``; staged, moved in on
    success); returns metrics.json and the plan's warnings."""
    with tempfile.TemporaryDirectory(prefix="RadAgentSlicer-") as cache:
        scene = new_scene(cache)
        try:
            return _plan_in_scene(scene, ct_path, segmentation_path, out, args, dicom_out)
        finally:
            scene.Clear(1)


def _plan_in_scene(
    scene: Any,
    ct_path: Path,
    segmentation_path: Path,
    out: Path,
    args: argparse.Namespace,
    dicom_out: Path | None,
) -> tuple[dict[str, Any], list[str]]:
    """Load the files into ``scene``, plan them with the panel's logic and write the outputs."""
    if dicom_out is not None:  # before the minutes of planning
        from radagent.io.dicom_write import check_export

        check_export(dicom_out)
    ct, segmentation = load_inputs(scene, ct_path, segmentation_path)
    result = PlanningLogic(scene).plan(
        ct,
        segmentation,
        targets=args.target,
        oars=args.oar,
        prescriptionGy=args.prescription,
        fractions=args.fractions,
        agent=None if args.agent == "none" else args.agent,
        beams=args.beams,
        body=args.body,
        scorecard=args.scorecard,
        tppAgent=args.tpp_agent,
        doseGridMm=args.dose_grid_mm,
        bixelMm=args.bixel_mm,
        agentGridMm=args.agent_grid_mm,
        seed=args.seed,
        objectiveSet=args.objectives,
        normalizeTo=args.normalize_to,
    )
    with staged_folder(out) as staging:
        save_results(scene, result, staging, args.save_scene)
        if dicom_out is not None:  # inside the outputs' staging: both land, or neither
            with staged_folder(dicom_out, "--export-dicom") as dicom_staging:
                export_dicom(result, dicom_staging, getattr(args, "anonymize", False))
    return result.metrics, result.description["warnings"]


def export_dicom(result: PlanNodes, folder: Path, anonymize: bool = False) -> list[Path]:
    """Write a finished plan as DICOM RT into ``folder`` with the core's writer (what the CLI's
    ``--export-dicom`` writes for a case from files: CT, RTSTRUCT, RTPLAN, RTDOSE)."""
    from radagent.io.dicom_write import write_dicom_plan

    dose = slicer.util.arrayFromVolume(result.doseVolumeNode)
    return write_dicom_plan(folder, result.case, dose, result.description, anonymize=anonymize)


def find_cases(directory: Path) -> list[tuple[str, Path, Path]]:
    """(name, CT, segmentation) of each sub-folder holding one ``.seg.nrrd`` and one other volume file."""
    if not directory.is_dir():
        raise InputError(f"--cases {directory} is not a directory")
    cases = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        segmentations = [p for p in files if p.name.lower().endswith(SEGMENTATION_SUFFIX)]
        volumes = [p for p in files if p not in segmentations and p.name.lower().endswith(VOLUME_SUFFIXES)]
        if len(segmentations) != 1 or len(volumes) != 1:
            raise InputError(
                f"case folder {folder} needs exactly one CT volume and one {SEGMENTATION_SUFFIX} "
                f"(found {len(volumes)} and {len(segmentations)})"
            )
        cases.append((folder.name, volumes[0], segmentations[0]))
    if not cases:
        raise InputError(f"--cases {directory} holds no case folders")
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    """Plan the cases the arguments name; one summary line per case; the exit status as documented."""
    args = _parser().parse_args(argv)
    try:
        if args.ct is not None:
            if args.segmentation is None:
                raise InputError("--ct needs --segmentation")
            cases = [(_stem(args.ct), args.ct, args.segmentation)]
        else:
            if args.segmentation is not None:
                raise InputError("--segmentation goes with --ct, not --cases")
            cases = find_cases(args.cases)
        if args.anonymize and args.export_dicom is None:
            raise InputError("--anonymize applies to --export-dicom DIR")
    except InputError as error:
        print(f"radagent-batch: error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    failed = 0
    for name, ct_path, segmentation_path in cases:
        out = args.out if args.ct is not None else args.out / name
        dicom_out = args.export_dicom
        if dicom_out is not None and args.ct is None:
            dicom_out = dicom_out / name
        start = time.perf_counter()
        try:
            metrics, warnings = plan_case_files(ct_path, segmentation_path, out, args, dicom_out)
        except Exception as error:
            failed += 1
            reason = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
            print(f"{name}: error: {reason}", file=sys.stderr)
            continue
        print(f"{name}: {plan_summary(metrics['plan'])}, {time.perf_counter() - start:.1f} s → {out}")
        for warning in warnings:
            print(f"{name}: warning: {warning}", file=sys.stderr)
    if len(cases) > 1:
        print(f"{len(cases) - failed} of {len(cases)} cases planned")
    return EXIT_CASE_FAILED if failed else EXIT_OK


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (SEGMENTATION_SUFFIX, *VOLUME_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
