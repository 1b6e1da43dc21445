"""The planning worker, runnable in a separate process: ``python worker.py FOLDER``.

FOLDER holds ``request.json``, a core plan request (:mod:`radagent.request`) whose patient is the case
archive the module exported beside it. The worker plans it with the core's :func:`radagent.request.run_plan`,
writes ``output.npz`` + ``output.json``, and reports progress on stdout, one JSON object per line. It only
does I/O: it imports ``radagent`` — never MRML, Qt or the rest of this package — so it runs in any Python
that has the core.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radagent.errors import InputError
from radagent.io.atomic import atomic_path

__all__ = ["CASE_FILE", "OUTPUT_FILE", "REQUEST_FILE", "WorkerOutput", "compute", "main", "read_output"]

CASE_FILE, REQUEST_FILE = "case.npz", "request.json"
OUTPUT_DOSE_FILE, OUTPUT_FILE = "output.npz", "output.json"
EXIT_BAD_INPUT = 2


@dataclass
class WorkerOutput:
    """What the worker hands back to the scene: the dose on the CT grid (Gy), metrics.json and plan.json."""

    dose_ct_gy: np.ndarray
    metrics: dict[str, Any]
    description: dict[str, Any]


def compute(request: Any, case: Any = None, progress: Any = None) -> WorkerOutput:
    """Plan a core request (on ``case`` when the caller built it from its scene) as a WorkerOutput."""
    from radagent.request import run_plan

    planned = run_plan(request, case, progress)
    return WorkerOutput(planned.plan.dose_ct_gy.astype(np.float32), planned.metrics(), planned.description())


def write_output(output: WorkerOutput, folder: str | Path) -> None:
    """Save the output: dose first, the JSON last, so a present ``output.json`` means a complete output."""
    folder = Path(folder)
    with atomic_path(folder / OUTPUT_DOSE_FILE) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(handle, dose_ct_gy=output.dose_ct_gy)
    text = json.dumps({"metrics": output.metrics, "description": output.description}, allow_nan=False)
    with atomic_path(folder / OUTPUT_FILE) as temporary:
        temporary.write_text(text)


def read_output(folder: str | Path) -> WorkerOutput:
    """The output saved by :func:`write_output`."""
    folder = Path(folder)
    payload = json.loads((folder / OUTPUT_FILE).read_text())
    with np.load(folder / OUTPUT_DOSE_FILE) as data:
        dose = data["dose_ct_gy"]
    return WorkerOutput(dose, payload["metrics"], payload["description"])


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Plan the request in FOLDER; progress and the outcome go to stdout as JSON lines. Exit status 0 on
    success, 2 for inputs the planner refuses (the message names the problem), 1 for anything else."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        _emit({"error": "usage: worker.py FOLDER (holding request.json)"})
        return EXIT_BAD_INPUT
    folder = Path(args[0])
    try:
        from radagent.request import read_request

        request = read_request(folder / REQUEST_FILE)
        output = compute(request, progress=lambda f, message: _emit({"progress": f, "message": message}))
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
