"""Run the planning worker in a separate process and follow it without blocking (the MONAIAuto3DSeg pattern).

A reader thread only moves the worker's stdout lines into a queue; the owner (the Widget's QTimer on the
main thread, or a loop in a test) calls :meth:`BackgroundPlanning.poll` to turn them into events, so no
thread but the caller's ever touches MRML. :meth:`~BackgroundPlanning.cancel` kills the worker and its
children; nothing is imported from a cancelled run, so the scene stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BackgroundPlanning", "WorkerEvent", "worker_command"]

WORKER_SCRIPT = Path(__file__).with_name("worker.py")


@dataclass(frozen=True)
class WorkerEvent:
    """One line from the worker: progress (fraction, message), an error message, or a log line."""

    kind: str  # "progress", "error", "done" or "log"
    fraction: float = 0.0
    message: str = ""


def worker_command(folder: str | Path, python: str | None = None) -> list[str]:
    """The command that plans the case exported to ``folder`` (``python`` defaults to this interpreter,
    which inside Slicer is PythonSlicer)."""
    return [python or sys.executable, str(WORKER_SCRIPT), str(folder)]


def _parse(line: str) -> WorkerEvent:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return WorkerEvent("log", message=line)
    if not isinstance(record, dict):
        return WorkerEvent("log", message=line)
    if "progress" in record:
        return WorkerEvent("progress", float(record["progress"]), str(record.get("message", "")))
    if "error" in record:
        return WorkerEvent("error", message=str(record["error"]))
    if record.get("done"):
        return WorkerEvent("done", 1.0)
    return WorkerEvent("log", message=line)


class BackgroundPlanning:
    """A running worker: :meth:`poll` for events, :attr:`returncode` when it has ended."""

    def __init__(self, folder: str | Path, python: str | None = None, env: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.cancelled = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        popen_args: dict[str, Any] = {}
        if os.name == "posix":
            popen_args["start_new_session"] = True  # its own process group, so cancel reaches children
        else:
            popen_args["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        self._process = subprocess.Popen(
            worker_command(self.folder, python),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            **popen_args,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Reader thread: stdout lines into the queue, then None at end of output. Nothing else."""
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def poll(self) -> list[WorkerEvent]:
        """The events that arrived since the last call (never blocks)."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None and line.strip():
                events.append(_parse(line))
        return events

    @property
    def running(self) -> bool:
        """True until the worker has exited and all its output has been read."""
        return self._process.poll() is None or self._reader.is_alive()

    @property
    def returncode(self) -> int | None:
        """The worker's exit status once it has ended (None while it runs)."""
        return None if self.running else self._process.returncode

    @property
    def succeeded(self) -> bool:
        """True when the worker ended normally with a complete output (and was not cancelled)."""
        return not self.cancelled and self.returncode == 0

    def cancel(self) -> None:
        """Kill the worker and every process it started; waits until it is gone."""
        self.cancelled = True
        if self._process.poll() is None:
            if os.name == "posix":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            else:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], check=False)
        self._process.wait()
        self._reader.join(timeout=5.0)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the worker ends (batch mode, tests); returns its exit status."""
        code = self._process.wait(timeout=timeout)
        self._reader.join(timeout=5.0)
        return code
