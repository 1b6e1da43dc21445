"""Upper-abdomen phantom for liver IMRT: a spherical PTV in the liver, stomach, spinal cord.

Geometry (RAS mm; +x patient's right, +y anterior, +z superior): a 3 mm grid of 339 × 246 × 150 mm;
the trunk is a super-ellipse (≈ 316 × 220 mm) with subcutaneous fat, an abdominal-wall muscle layer
with rib cross-sections, and a fat-filled cavity. The liver (right lobe plus a left lobe reaching over
the midline, ≈ 1.6 l) fills the right upper quadrant with the lung bases above and behind its dome;
the stomach (with an anterior gas cap, as in a supine patient) lies left of the left lobe; the
vertebral bodies (cancellous with a cortical rim, separated by discs), posterior elements, spinal canal
and cord, aorta and kidneys complete the slice. The PTV is a 56 mm sphere in the liver a
millimetre or two from the stomach (variants: 0–12 mm), so the stomach's near-maximum dose is the
plan's trade-off: default TPPs leave it above the card's 45 Gy, tuned ones bring it under.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radagent.cases.shapes import HU, Frame, ellipsoid, rim, superellipse_prism, swept_ellipse
from radagent.patient import Role, Structure

__all__ = ["AbdomenAnatomy", "build_abdomen"]

SPACING_MM = 3.0
GRID_SIZE_MM = (339.0, 246.0, 150.0)
GRID_CENTER_RAS = (0.0, 0.0, 10.0)
BODY_EXPONENT = 2.2
MUSCLE_WALL_MM = 12.0
RIB_PITCH_MM = 30.0  # one rib cross-section every 30 mm along z, 9 mm tall
VERTEBRA_PITCH_MM = 32.0  # vertebral body + disc
DISC_MM = 7.0
CORD_CENTER_MM = (0.0, -72.0)
CORD_RADIUS_MM = 5.0
CANAL_RADIUS_MM = 9.0
NOISE_HU = 6.0


@dataclass(frozen=True)
class AbdomenAnatomy:
    """Parameters of one upper abdomen (mm); the defaults are the typical patient of variant 0."""

    body_semi_axes_mm: tuple[float, float] = (158.0, 110.0)
    fat_mm: float = 18.0
    ptv_radius_mm: float = 28.0
    ptv_stomach_gap_mm: float = 0.0  # shortest distance from the PTV surface to the stomach
    stomach_center_mm: tuple[float, float, float] = (-58.0, 30.0, 20.0)
    stomach_semi_axes_mm: tuple[float, float, float] = (42.0, 35.0, 55.0)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> AbdomenAnatomy:
        """A random but plausible patient (uniform draws around the typical values)."""
        stomach_scale = rng.uniform(0.8, 1.25)
        return cls(
            body_semi_axes_mm=(158.0 * rng.uniform(0.94, 1.05), 110.0 * rng.uniform(0.94, 1.05)),
            fat_mm=rng.uniform(10.0, 32.0),
            ptv_radius_mm=rng.uniform(18.0, 36.0),
            ptv_stomach_gap_mm=rng.uniform(0.0, 12.0),
            stomach_center_mm=(
                -58.0 + rng.uniform(-10.0, 10.0),
                30.0 + rng.uniform(-8.0, 8.0),
                20.0 + rng.uniform(-10.0, 10.0),
            ),
            stomach_semi_axes_mm=tuple(float(s * stomach_scale) for s in (42.0, 35.0, 55.0)),
        )


def build_abdomen(variant: int) -> tuple[Frame, np.ndarray, tuple[Structure, ...]]:
    """CT (HU) and structures of abdomen ``variant`` (seed = variant; 0 is the typical patient)."""
    rng = np.random.default_rng(variant)
    anatomy = AbdomenAnatomy() if variant == 0 else AbdomenAnatomy.draw(rng)
    frame = Frame.box(GRID_SIZE_MM, SPACING_MM, GRID_CENTER_RAS)
    ct = np.full(frame.shape, HU.air, dtype=np.float32)

    a, b = anatomy.body_semi_axes_mm
    body = superellipse_prism(frame, (a, b), BODY_EXPONENT)
    wall = superellipse_prism(frame, (a - anatomy.fat_mm, b - 0.8 * anatomy.fat_mm), BODY_EXPONENT)
    inner = (a - anatomy.fat_mm - MUSCLE_WALL_MM, b - 0.8 * anatomy.fat_mm - MUSCLE_WALL_MM)
    cavity = superellipse_prism(frame, inner, BODY_EXPONENT)
    ct[body] = HU.fat
    ct[wall] = HU.muscle
    ct[cavity] = HU.fat

    spine, discs, canal, cord = _spine(frame)
    paraspinal = superellipse_prism(frame, (24.0, 17.0), 2.0, center=(35.0, -80.0)) | superellipse_prism(
        frame, (24.0, 17.0), 2.0, center=(-35.0, -80.0)
    )
    kidneys = ellipsoid(frame, (72.0, -45.0, -45.0), (28.0, 22.0, 50.0)) | ellipsoid(
        frame, (-72.0, -45.0, -35.0), (28.0, 22.0, 50.0)
    )
    aorta = superellipse_prism(frame, (12.0, 12.0), 2.0, center=(-15.0, -10.0))
    posterior = spine | discs | canal | cord | paraspinal | kidneys | aorta
    liver = (
        (
            ellipsoid(frame, (60.0, 0.0, 5.0), (80.0, 80.0, 65.0))
            | ellipsoid(frame, (-10.0, 40.0, 20.0), (55.0, 30.0, 38.0), tilt_deg=-15.0)
        )
        & cavity
        & ~posterior
    )
    stomach = ellipsoid(frame, anatomy.stomach_center_mm, anatomy.stomach_semi_axes_mm) & cavity & ~liver
    gas_level_y = anatomy.stomach_center_mm[1] + 0.5 * anatomy.stomach_semi_axes_mm[1]
    stomach_gas = stomach & frame.full(frame.y >= gas_level_y)  # supine: gas rises anteriorly
    lungs = (
        (
            ellipsoid(frame, (85.0, -35.0, 100.0), (65.0, 55.0, 50.0))
            | ellipsoid(frame, (-85.0, -35.0, 100.0), (65.0, 55.0, 50.0))
        )
        & cavity
        & ~liver
        & ~posterior
    )

    ct[paraspinal] = HU.muscle
    ct[kidneys & cavity] = HU.soft_tissue
    ct[aorta] = HU.soft_tissue
    ct[lungs] = HU.lung
    ct[liver] = HU.liver
    ct[stomach] = HU.bowel_content
    ct[stomach_gas] = HU.air
    ct[spine] = HU.cancellous_bone
    ct[rim(spine)] = HU.cortical_bone
    ct[discs] = HU.cartilage
    ct[canal] = HU.csf
    ct[cord] = HU.soft_tissue
    ribs = _ribs(frame, wall & ~cavity, inner)
    ct[ribs] = HU.cortical_bone

    center = _ptv_center(frame, liver, stomach, anatomy, None if variant == 0 else rng)
    ptv = ellipsoid(frame, center, (anatomy.ptv_radius_mm,) * 3) & body
    ct[body] += rng.normal(0.0, NOISE_HU, size=int(body.sum())).astype(np.float32)
    structures = (
        Structure("Body", Role.BODY, body),
        Structure("PTV", Role.TARGET, ptv),
        Structure("Liver", Role.OAR, liver & ~ptv),
        Structure("Stomach", Role.OAR, stomach),
        Structure("SpinalCord", Role.OAR, cord),
    )
    return frame, ct, structures


def _spine(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertebral bone (bodies, pedicles, laminae, spinous process), discs, spinal canal (CSF) and cord."""
    z = frame.z.ravel()
    ones = np.ones_like(z)
    column = swept_ellipse(frame, 0.0 * ones, -42.0 * ones, 22.0 * ones, 18.0 * ones)
    discs = column & frame.full((frame.z - frame.z.min()) % VERTEBRA_PITCH_MM < DISC_MM)
    cx, cy = CORD_CENTER_MM
    arch = swept_ellipse(frame, cx * ones, cy * ones, 17.0 * ones, 17.0 * ones)
    canal = swept_ellipse(frame, cx * ones, cy * ones, CANAL_RADIUS_MM * ones, CANAL_RADIUS_MM * ones)
    pedicles = frame.full(
        (np.abs(frame.x) >= 8.0) & (np.abs(frame.x) <= 16.0) & (frame.y >= -72.0) & (frame.y <= -55.0)
    )
    spinous = frame.full((np.abs(frame.x) <= 4.0) & (frame.y >= -95.0) & (frame.y <= -85.0))
    bone = (column & ~discs) | ((arch | pedicles) & ~canal) | spinous
    cord = swept_ellipse(frame, cx * ones, cy * ones, CORD_RADIUS_MM * ones, CORD_RADIUS_MM * ones)
    return bone, discs, canal & ~cord, cord


def _ribs(frame: Frame, wall: np.ndarray, inner_semi_axes: tuple[float, float]) -> np.ndarray:
    """Rib cross-sections in the deep abdominal wall, one band every RIB_PITCH_MM, none at the midline."""
    a, b = inner_semi_axes
    deep = superellipse_prism(frame, (a + 9.0, b + 9.0), BODY_EXPONENT) & wall
    bands = (frame.z - frame.z.min()) % RIB_PITCH_MM < 9.0
    lateral = (np.abs(frame.x) >= 40.0) | ((frame.y < -60.0) & (np.abs(frame.x) >= 25.0))
    return deep & frame.full(bands & lateral)


def _ptv_center(
    frame: Frame,
    liver: np.ndarray,
    stomach: np.ndarray,
    anatomy: AbdomenAnatomy,
    rng: np.random.Generator | None,
) -> tuple[float, float, float]:
    """A PTV centre deep enough in the liver whose sphere lies ``ptv_stomach_gap_mm`` from the stomach.

    The sphere never overlaps the stomach. Variant 0 takes the candidate nearest the wanted gap; other
    variants pick one at random among those within 3 mm of it.
    """
    radius = anatomy.ptv_radius_mm
    depth_mm = ndimage.distance_transform_edt(liver, sampling=frame.spacing_mm)
    to_stomach_mm = ndimage.distance_transform_edt(~stomach, sampling=frame.spacing_mm)
    candidates = np.argwhere((depth_mm >= 0.8 * radius) & (to_stomach_mm > radius + 0.5))
    gap_mm = to_stomach_mm[tuple(candidates.T)] - radius
    miss_mm = np.abs(gap_mm - anatomy.ptv_stomach_gap_mm)
    close = np.flatnonzero(miss_mm <= max(3.0, float(miss_mm.min())))
    chosen = close[np.argmin(miss_mm[close])] if rng is None else close[rng.integers(len(close))]
    k, j, i = candidates[chosen]
    return (float(frame.x.ravel()[i]), float(frame.y.ravel()[j]), float(frame.z.ravel()[k]))
