"""A memory cache of per-beam dose-influence blocks, so agents revisiting an angle pay for it once."""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from radagent.beams import BeamGeometry
from radagent.dose.engine import (
    DoseEngineSettings,
    PreparedCase,
    compute_beam,
    prepare_case,
    validated_angles,
)
from radagent.dose.influence import DoseInfluence, stack_beams
from radagent.errors import InputError
from radagent.geometry import Grid
from radagent.patient import Case
from radagent.progress import ProgressCallback, report

__all__ = ["DoseInfluenceCache", "case_fingerprint"]

_Block = tuple[sparse.csc_matrix, BeamGeometry, np.ndarray]


def case_fingerprint(case: Case) -> str:
    """A hash of everything in a case that the dose depends on: CT, geometry, structures, calibration."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(case.ct_hu, dtype=np.float32).tobytes())
    digest.update(repr(case.grid.shape).encode())
    digest.update(np.ascontiguousarray(case.grid.ijk_to_ras).tobytes())
    digest.update(case.patient_position.encode())
    digest.update(np.asarray(case.calibration.points, dtype=np.float64).tobytes())
    for structure in case.structures:
        digest.update(f"{structure.name}\0{structure.role}\0".encode())
        digest.update(np.packbits(structure.mask).tobytes())
    return digest.hexdigest()


def _block_megabytes(block: sparse.csc_matrix) -> float:
    return (block.data.nbytes + block.indices.nbytes + block.indptr.nbytes) / 1e6


class DoseInfluenceCache:
    """Per-beam blocks keyed by (case fingerprint, settings, gantry angle, isocentre), least recently used
    dropped first beyond ``max_megabytes``; :meth:`get` joins any set of angles from them.

    A case's fingerprint is computed once per :class:`Case` object (a case is not changed in place once
    planned: the environments and agents reuse the same objects for every step).
    """

    def __init__(self, max_megabytes: float = 4000.0) -> None:
        if not max_megabytes > 0:
            raise InputError(f"cache size must be positive, got {max_megabytes} MB")
        self.max_megabytes = float(max_megabytes)
        self._blocks: OrderedDict[tuple, _Block] = OrderedDict()
        self._prepared: OrderedDict[tuple, PreparedCase] = OrderedDict()
        self._fingerprints: weakref.WeakKeyDictionary[Case, str] = weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def megabytes(self) -> float:
        """Memory held by the cached blocks (MB)."""
        return sum(_block_megabytes(block) for block, _, _ in self._blocks.values())

    def clear(self) -> None:
        """Drop every cached block."""
        self._blocks.clear()
        self._prepared.clear()

    def get(
        self,
        case: Case,
        gantry_angles_deg: Sequence[float],
        settings: DoseEngineSettings | None = None,
        isocenter_ras: Sequence[float] | None = None,
        progress: ProgressCallback | None = None,
    ) -> DoseInfluence:
        """The dose-influence matrix of these beams, computing only the blocks not cached yet."""
        blocks, prepared = self._beams(case, gantry_angles_deg, settings, isocenter_ras, progress)
        return stack_beams(blocks, prepared.dose_grid, prepared.body_voxels)

    def beam_blocks(
        self,
        case: Case,
        gantry_angles_deg: Sequence[float],
        settings: DoseEngineSettings | None = None,
        isocenter_ras: Sequence[float] | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[list[sparse.csc_matrix], Grid]:
        """Each beam's own CSC block (the cached objects, not copies) and the dose grid: what
        :class:`~radagent.dose.influence.BeamRows` needs, without the stacked copy :meth:`get` makes."""
        blocks, prepared = self._beams(case, gantry_angles_deg, settings, isocenter_ras, progress)
        return [block for block, _, _ in blocks], prepared.dose_grid

    def _beams(
        self,
        case: Case,
        gantry_angles_deg: Sequence[float],
        settings: DoseEngineSettings | None,
        isocenter_ras: Sequence[float] | None,
        progress: ProgressCallback | None,
    ) -> tuple[list[_Block], PreparedCase]:
        """The blocks of these beams, computing the missing ones, and the prepared case."""
        settings = settings or DoseEngineSettings()
        angles = validated_angles(gantry_angles_deg)
        case_key = (self.fingerprint(case), settings)
        prepared = self._prepared_case(case_key, case, settings)
        iso = prepared.target_centroid_ras if isocenter_ras is None else isocenter_ras
        iso_key = tuple(round(float(v), 6) for v in iso)
        keys = [(*case_key, round(angle, 6), iso_key) for angle in angles]
        blocks = []
        for n, (key, angle) in enumerate(zip(keys, angles, strict=True)):
            if key in self._blocks:
                self.hits += 1
                self._blocks.move_to_end(key)
            else:
                self.misses += 1
                self._blocks[key] = compute_beam(prepared, angle, iso, settings)
            blocks.append(self._blocks[key])
            report(progress, (n + 1) / len(angles), f"dose of beam {n + 1}/{len(angles)} (gantry {angle:g}°)")
        self._evict(keep=set(keys))
        return blocks, prepared

    def fingerprint(self, case: Case) -> str:
        """:func:`case_fingerprint`, hashed once per case object."""
        if case not in self._fingerprints:
            self._fingerprints[case] = case_fingerprint(case)
        return self._fingerprints[case]

    def _prepared_case(self, case_key: tuple, case: Case, settings: DoseEngineSettings) -> PreparedCase:
        if case_key not in self._prepared:
            self._prepared[case_key] = prepare_case(case, settings)
            while len(self._prepared) > 2:
                self._prepared.popitem(last=False)
        self._prepared.move_to_end(case_key)
        return self._prepared[case_key]

    def _evict(self, keep: set[tuple]) -> None:
        total = self.megabytes
        for key in list(self._blocks):
            if total <= self.max_megabytes:
                break
            if key not in keep:
                total -= _block_megabytes(self._blocks.pop(key)[0])
