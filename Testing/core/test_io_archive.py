"""The case archive (radagent.io.archive): a Case saved to one file and read back losslessly."""

import numpy as np
import pytest

from radagent.cases import load_case
from radagent.errors import InputError
from radagent.io.archive import read_case_archive, write_case_archive


def test_case_round_trips_through_the_archive(tmp_path):
    prostate = load_case("prostate", 0)
    write_case_archive(prostate, tmp_path / "case.npz")
    case = read_case_archive(tmp_path / "case.npz")
    assert [(s.name, s.role) for s in case.structures] == [(s.name, s.role) for s in prostate.structures]
    assert all(
        np.array_equal(a.mask, b.mask) for a, b in zip(case.structures, prostate.structures, strict=True)
    )
    np.testing.assert_array_equal(case.ct_hu, prostate.ct_hu)
    np.testing.assert_array_equal(case.grid.ijk_to_ras, prostate.grid.ijk_to_ras)
    assert case.protocol.scorecard.name == "prostate"
    assert (case.prescription_gy, case.protocol.fractions) == (
        prostate.prescription_gy,
        prostate.protocol.fractions,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]  # no temporary file left


def test_missing_or_foreign_archives_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_case_archive(tmp_path / "none.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a radagent case archive"):
        read_case_archive(tmp_path / "garbage.npz")


def test_target_dose_levels_survive_the_archive(tmp_path):
    import dataclasses

    from radagent.patient import Role, Structure

    prostate = load_case("prostate", 0)
    ptv = prostate.structure("PTV")
    structures = tuple(dataclasses.replace(s, dose_gy=70.0) if s is ptv else s for s in prostate.structures)
    leveled = dataclasses.replace(
        prostate, structures=(*structures, Structure("Boost", Role.TARGET, ptv.mask))
    )
    write_case_archive(leveled, tmp_path / "case.npz")
    case = read_case_archive(tmp_path / "case.npz")
    assert case.target_level_gy("PTV") == 70.0 and case.target_level_gy("Boost") == prostate.prescription_gy
    assert case.structure("Bladder").dose_gy is None


def test_archives_of_the_first_format_are_still_read(tmp_path):
    """Format 1 wrote [name, role] per structure (no dose level)."""
    import json

    water = load_case("water", 0)
    meta = {
        "format": 1,
        "name": "old",
        "structures": [[s.name, str(s.role)] for s in water.structures],
        "prescription_gy": water.prescription_gy,
        "fractions": 1,
        "scorecard": None,
        "patient_position": "HFS",
        "description": "",
    }
    with (tmp_path / "old.npz").open("wb") as handle:
        np.savez_compressed(
            handle,
            ct_hu=water.ct_hu,
            ijk_to_ras=water.grid.ijk_to_ras,
            masks=np.stack([s.mask for s in water.structures]),
            meta=np.array(json.dumps(meta)),
        )
    case = read_case_archive(tmp_path / "old.npz")
    assert [s.name for s in case.structures] == [s.name for s in water.structures]
    assert all(s.dose_gy is None for s in case.structures)
