"""The one atomic writer: a complete file or none, with the user's usual permissions."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from radagent.geometry import Grid
from radagent.io.atomic import atomic_path
from radagent.io.nrrd import write_volume


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    with atomic_path(target) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_follow_the_umask_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        write_volume(tmp_path / "dose.nrrd", np.zeros((2, 3, 4), np.float32), Grid((2, 3, 4), np.eye(4)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "dose.nrrd").stat().st_mode) == 0o644
