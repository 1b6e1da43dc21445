"""Geometric test phantoms in water: the TG-119 C-shape and a water box with a cubic PTV.

C-shape, after AAPM TG-119 (Ezzell et al., Med Phys 36 (2009) 5359), which leaves the phantom to the
user and defines the structures: a central core — a cylinder of 10 mm radius — and a C-shaped PTV
around it whose inner arc keeps a 5 mm gap to the core (inner radius 15 mm) and whose outer arc has a
37 mm radius; the core is 100 mm long and the PTV 80 mm. The opening of the C (posterior here) is as
wide as the inner arc's diameter (our choice, from the report's figure). The phantom is a water box of
300 × 200 × 140 mm (LR × AP × SI, our choice) on a 2.5 mm grid so that the 5 mm gap spans two voxels.
"""

from __future__ import annotations

import numpy as np

from radagent.cases.shapes import HU, Frame
from radagent.patient import Role, Structure

__all__ = ["build_cshape", "build_water"]

CSHAPE_SPACING_MM = 2.5
CSHAPE_BOX_MM = (300.0, 200.0, 140.0)
CORE_RADIUS_MM = 10.0
CORE_LENGTH_MM = 100.0
PTV_INNER_RADIUS_MM = 15.0
PTV_OUTER_RADIUS_MM = 37.0
PTV_LENGTH_MM = 80.0

WATER_SPACING_MM = 3.0
WATER_BOX_MM = 300.0
WATER_PTV_EDGE_MM = 40.0

AIR_MARGIN_VOXELS = 2  # air around each box, so the body surface lies inside the grid


def build_cshape(variant: int) -> tuple[Frame, np.ndarray, tuple[Structure, ...]]:
    """The TG-119 C-shape; variants ≥ 1 turn the opening and shift the structures (seed = variant)."""
    rng = np.random.default_rng(variant)
    opening_deg, shift = (
        (0.0, np.zeros(3)) if variant == 0 else (rng.uniform(0.0, 360.0), rng.uniform(-10.0, 10.0, size=3))
    )
    size = tuple(s + 2 * AIR_MARGIN_VOXELS * CSHAPE_SPACING_MM for s in CSHAPE_BOX_MM)
    frame = Frame.box(size, CSHAPE_SPACING_MM)
    body = _box(frame, np.asarray(CSHAPE_BOX_MM) / 2.0, np.zeros(3))
    dx, dy, dz = frame.x - shift[0], frame.y - shift[1], frame.z - shift[2]
    radius = np.hypot(dx, dy)
    # Rotate so that the opening points posterior (−y) at 0° and turns with opening_deg.
    angle = np.radians(opening_deg)
    across = dx * np.cos(angle) + dy * np.sin(angle)
    along = -dx * np.sin(angle) + dy * np.cos(angle)
    opening = (along < 0) & (np.abs(across) < PTV_INNER_RADIUS_MM)
    ring = (radius >= PTV_INNER_RADIUS_MM) & (radius <= PTV_OUTER_RADIUS_MM)
    ptv = frame.full(ring & ~opening & (np.abs(dz) <= PTV_LENGTH_MM / 2.0))
    core = frame.full((radius <= CORE_RADIUS_MM) & (np.abs(dz) <= CORE_LENGTH_MM / 2.0))
    ct = np.where(body, HU.water, HU.air).astype(np.float32)
    structures = (
        Structure("Body", Role.BODY, body),
        Structure("PTV", Role.TARGET, ptv),
        Structure("Core", Role.OAR, core),
    )
    return frame, ct, structures


def build_water(variant: int) -> tuple[Frame, np.ndarray, tuple[Structure, ...]]:
    """A 300 mm water cube with a 40 mm cubic PTV at its centre; variants ≥ 1 resize and move the PTV."""
    rng = np.random.default_rng(variant)
    edge_mm, center = (
        (WATER_PTV_EDGE_MM, np.zeros(3))
        if variant == 0
        else (rng.uniform(30.0, 60.0), rng.uniform(-30.0, 30.0, size=3))
    )
    size = WATER_BOX_MM + 2 * AIR_MARGIN_VOXELS * WATER_SPACING_MM
    frame = Frame.box((size,) * 3, WATER_SPACING_MM)
    body = _box(frame, np.full(3, WATER_BOX_MM / 2.0), np.zeros(3))
    ptv = _box(frame, np.full(3, edge_mm / 2.0), center)
    ct = np.where(body, HU.water, HU.air).astype(np.float32)
    return frame, ct, (Structure("Body", Role.BODY, body), Structure("PTV", Role.TARGET, ptv))


def _box(frame: Frame, half_size_mm: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Voxels whose centres lie in an axis-aligned box (RAS mm)."""
    inside = (
        (np.abs(frame.x - center[0]) <= half_size_mm[0] + 1e-6)
        & (np.abs(frame.y - center[1]) <= half_size_mm[1] + 1e-6)
        & (np.abs(frame.z - center[2]) <= half_size_mm[2] + 1e-6)
    )
    return frame.full(inside)
