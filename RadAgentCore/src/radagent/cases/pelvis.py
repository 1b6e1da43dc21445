"""Male pelvis phantom for prostate IMRT: prostate PTV, bladder, rectum, femoral heads, bowel loops.

Geometry (RAS mm, prostate centre at the origin; +x patient's right, +y anterior, +z superior):
a 3 mm grid of 390 × 252 × 156 mm; the pelvis outline is a super-ellipse (≈ 368 × 228 mm) with a
subcutaneous fat layer, muscle, and a fat-filled pelvic cavity holding the organs. The prostate is a
tilted ellipsoid (45 × 35 × 40 mm); the PTV adds a 6 mm margin (5 mm posteriorly, as is usual next to
the rectum). The rectum is a tube of ≈ 32 × 25 mm cross-section running 86 mm along the sacral curve;
the prostate presses into its anterior wall, so the PTV overlaps the wall, and the bladder (150 cc)
sits anterior-superior on the prostate base. Bones (femoral heads and necks, acetabula, pubis, ischia,
sacrum, iliac wings) are cancellous bone with a cortical rim. Small-bowel loops (with gas) fill the
space above and behind the bladder dome.

The overlaps are set so that planning is a real trade-off (METHOD §5): with the sources' default TPPs
a plan typically misses some rectum or bladder criteria of the 9-point card, while tuned TPPs reach 9/9.
Variants whose bladder or rectum lie more than MAX_OAR_FRACTION_IN_PTV inside the PTV are redrawn,
since no plan could then meet the card's 15 % limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radagent.cases.shapes import (
    HU,
    Frame,
    dilate_mm,
    ellipsoid,
    rim,
    superellipse_prism,
    swept_ellipse,
    tube,
)
from radagent.patient import Role, Structure

__all__ = ["PelvisAnatomy", "build_pelvis"]

SPACING_MM = 3.0
GRID_SIZE_MM = (390.0, 252.0, 156.0)  # LR, AP, SI
GRID_CENTER_RAS = (0.0, 0.0, 18.0)
BODY_EXPONENT = 2.4  # super-ellipse: squarer than an ellipse, like a pelvis on a flat couch
WALL_MM = 3.0  # bladder and rectum wall thickness
NOISE_HU = 6.0
# Bladder semi-axes per unit scale s (LR, AP, SI): a filled bladder is wider than it is tall.
BLADDER_SHAPE = (1.4, 1.05, 0.85)
MAX_OAR_FRACTION_IN_PTV = 0.12
MAX_DRAWS = 50
LESSER_TROCHANTER_Z_MM = -45.0  # the femoral-head structure ends here (RTOG contouring)


@dataclass(frozen=True)
class PelvisAnatomy:
    """Parameters of one pelvis (mm, cc); the defaults are the typical patient of variant 0."""

    body_semi_axes_mm: tuple[float, float] = (184.0, 114.0)
    fat_mm: float = 22.0
    prostate_semi_axes_mm: tuple[float, float, float] = (22.5, 17.5, 20.0)
    prostate_tilt_deg: float = 10.0
    ptv_margin_mm: float = 6.0
    ptv_posterior_margin_mm: float = 5.0
    seminal_vesicles_in_ptv: bool = False
    bladder_volume_cc: float = 150.0
    bladder_shift_mm: tuple[float, float] = (0.0, 0.0)  # AP, SI
    rectum_radius_mm: float = 14.0
    rectum_indent_mm: float = 5.5  # how far the prostate presses into the rectum's anterior wall
    rectum_extent_mm: tuple[float, float] = (-40.0, 46.0)  # inferior, superior end (z)
    rectal_gas_radius_mm: float = 6.0
    rectal_gas_z_mm: float = 35.0
    femoral_head_radius_mm: float = 24.0
    femoral_head_lateral_mm: float = 92.0
    bowel_loops: int = 7
    bowel_floor_z_mm: float = 50.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> PelvisAnatomy:
        """A random but plausible patient (uniform draws around the typical values)."""
        margin = rng.uniform(5.0, 7.0)
        return cls(
            body_semi_axes_mm=(184.0 * rng.uniform(0.94, 1.04), 114.0 * rng.uniform(0.94, 1.04)),
            fat_mm=rng.uniform(12.0, 38.0),
            prostate_semi_axes_mm=tuple(float(s * rng.uniform(0.8, 1.25)) for s in (22.5, 17.5, 20.0)),
            prostate_tilt_deg=rng.uniform(0.0, 25.0),
            ptv_margin_mm=margin,
            ptv_posterior_margin_mm=rng.uniform(4.0, margin),
            seminal_vesicles_in_ptv=bool(rng.random() < 0.3),
            bladder_volume_cc=rng.uniform(90.0, 350.0),
            bladder_shift_mm=(rng.uniform(-5.0, 5.0), rng.uniform(-5.0, 5.0)),
            rectum_radius_mm=rng.uniform(11.0, 19.0),
            rectum_indent_mm=rng.uniform(2.5, 8.5),
            rectum_extent_mm=(rng.uniform(-46.0, -36.0), rng.uniform(38.0, 56.0)),
            rectal_gas_radius_mm=0.0 if rng.random() < 0.4 else rng.uniform(4.0, 10.0),
            rectal_gas_z_mm=rng.uniform(-10.0, 45.0),
            femoral_head_radius_mm=rng.uniform(22.0, 26.0),
            femoral_head_lateral_mm=rng.uniform(86.0, 98.0),
            bowel_loops=int(rng.integers(5, 10)),
            bowel_floor_z_mm=rng.uniform(38.0, 62.0),
        )


def build_pelvis(variant: int, *, with_bowel: bool) -> tuple[Frame, np.ndarray, tuple[Structure, ...]]:
    """CT (HU) and structures of pelvis ``variant`` (seed = variant; 0 is the typical patient)."""
    rng = np.random.default_rng(variant)
    frame = Frame.box(GRID_SIZE_MM, SPACING_MM, GRID_CENTER_RAS)
    anatomy, organs = _feasible_anatomy(frame, variant, rng)
    ct = np.full(frame.shape, HU.air, dtype=np.float32)

    body = superellipse_prism(frame, anatomy.body_semi_axes_mm, BODY_EXPONENT)
    a, b = anatomy.body_semi_axes_mm
    muscle = superellipse_prism(frame, (a - anatomy.fat_mm, b - 0.8 * anatomy.fat_mm), BODY_EXPONENT)
    ct[body] = HU.fat
    ct[muscle] = HU.muscle
    ct[_pelvic_cavity(frame)] = HU.fat
    ct[organs.prostate | organs.seminal_vesicles | organs.bladder | organs.rectum] = HU.soft_tissue
    ct[organs.urine] = HU.urine
    ct[organs.rectal_lumen] = HU.bowel_content
    ct[organs.rectal_gas] = HU.air

    bones = _bones(frame, anatomy)
    occupied = organs.bladder | organs.rectum | organs.ptv | bones.pelvis
    bowel, bowel_gas = _bowel(frame, anatomy, rng, muscle, occupied)
    ct[bowel] = HU.bowel_content
    ct[bowel_gas] = HU.air
    for bone in (bones.pelvis, bones.femurs):
        ct[bone] = HU.cancellous_bone
        ct[rim(bone)] = HU.cortical_bone
    ct[body] += rng.normal(0.0, NOISE_HU, size=int(body.sum())).astype(np.float32)

    structures = [
        Structure("Body", Role.BODY, body),
        Structure("PTV", Role.TARGET, organs.ptv),
        Structure("Bladder", Role.OAR, organs.bladder),
        Structure("Rectum", Role.OAR, organs.rectum),
        Structure("FemoralHead_L", Role.OAR, bones.femoral_head_left),
        Structure("FemoralHead_R", Role.OAR, bones.femoral_head_right),
    ]
    if with_bowel:
        structures.append(Structure("Bowel", Role.OAR, bowel))
    return frame, ct, tuple(structures)


@dataclass(frozen=True)
class _SoftOrgans:
    """The masks of the soft-tissue organs and the PTV of one pelvis."""

    prostate: np.ndarray
    seminal_vesicles: np.ndarray
    ptv: np.ndarray
    bladder: np.ndarray
    urine: np.ndarray
    rectum: np.ndarray
    rectal_lumen: np.ndarray
    rectal_gas: np.ndarray

    def worst_fraction_in_ptv(self) -> float:
        """The larger of the bladder's and the rectum's volume fractions inside the PTV."""
        return max(
            np.count_nonzero(organ & self.ptv) / max(np.count_nonzero(organ), 1)
            for organ in (self.bladder, self.rectum)
        )


@dataclass(frozen=True)
class _Bones:
    """Bone masks: the scored femoral heads (head and neck to the lesser trochanter), all femur, pelvis."""

    femoral_head_left: np.ndarray
    femoral_head_right: np.ndarray
    femurs: np.ndarray
    pelvis: np.ndarray


def _feasible_anatomy(
    frame: Frame, variant: int, rng: np.random.Generator
) -> tuple[PelvisAnatomy, _SoftOrgans]:
    """Variant 0's typical anatomy, or the first random draw whose OAR–PTV overlap leaves 9/9 reachable.

    A bladder or rectum more than MAX_OAR_FRACTION_IN_PTV inside the PTV cannot meet the card's
    15 % limits whatever the plan, so such draws are rejected (deterministically, from the same seed).
    """
    if variant == 0:
        anatomy = PelvisAnatomy()
        return anatomy, _soft_organs(frame, anatomy)
    for _ in range(MAX_DRAWS):
        anatomy = PelvisAnatomy.draw(rng)
        organs = _soft_organs(frame, anatomy)
        if organs.worst_fraction_in_ptv() <= MAX_OAR_FRACTION_IN_PTV:
            return anatomy, organs
    raise RuntimeError(f"no feasible pelvis anatomy in {MAX_DRAWS} draws for variant {variant}")


def _soft_organs(frame: Frame, anatomy: PelvisAnatomy) -> _SoftOrgans:
    """Prostate (+ seminal vesicles), PTV, rectum and bladder of one anatomy."""
    prostate = ellipsoid(frame, (0.0, 0.0, 0.0), anatomy.prostate_semi_axes_mm, anatomy.prostate_tilt_deg)
    vesicles = _seminal_vesicles(frame, anatomy)
    ctv = prostate | vesicles if anatomy.seminal_vesicles_in_ptv else prostate
    rectum, rectal_lumen, rectal_gas = _rectum(frame, anatomy, prostate)
    bladder, urine = _bladder(frame, anatomy, prostate | vesicles | rectum)
    return _SoftOrgans(
        prostate=prostate,
        seminal_vesicles=vesicles & ~rectum & ~bladder,
        ptv=_ptv(frame, anatomy, ctv),
        bladder=bladder,
        urine=urine,
        rectum=rectum,
        rectal_lumen=rectal_lumen,
        rectal_gas=rectal_gas,
    )


def _pelvic_cavity(frame: Frame) -> np.ndarray:
    """The fat-filled true pelvis around the organs, narrower below the femoral heads."""
    z = frame.z.ravel()
    semi_x = np.where(z >= -15.0, 64.0, 46.0)
    semi_y = np.full_like(z, 58.0)
    return swept_ellipse(frame, np.zeros_like(z), np.full_like(z, -8.0), semi_x, semi_y)


def _prostate_posterior_mm(anatomy: PelvisAnatomy) -> float:
    """How far the (tilted) prostate reaches posteriorly from its centre, mm."""
    _, b, c = anatomy.prostate_semi_axes_mm
    angle = np.radians(anatomy.prostate_tilt_deg)
    return float(np.hypot(b * np.cos(angle), c * np.sin(angle)))


def _seminal_vesicles(frame: Frame, anatomy: PelvisAnatomy) -> np.ndarray:
    """The proximal seminal vesicles: two small ellipsoids posterior-superior to the prostate base."""
    _, b, c = anatomy.prostate_semi_axes_mm
    left = ellipsoid(frame, (-16.0, -0.6 * b, 0.9 * c + 6.0), (13.0, 6.0, 9.0), 35.0)
    right = ellipsoid(frame, (16.0, -0.6 * b, 0.9 * c + 6.0), (13.0, 6.0, 9.0), 35.0)
    return left | right


def _ptv(frame: Frame, anatomy: PelvisAnatomy, ctv: np.ndarray) -> np.ndarray:
    """CTV + isotropic margin, with the smaller posterior margin towards the rectum."""
    expanded = dilate_mm(frame, ctv, anatomy.ptv_margin_mm)
    posterior_limit = -_prostate_posterior_mm(anatomy) - anatomy.ptv_posterior_margin_mm
    return (expanded & frame.full(frame.y >= posterior_limit)) | ctv


def _rectum(
    frame: Frame, anatomy: PelvisAnatomy, prostate: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectum (outer wall), its lumen and a gas pocket on the lumen's anterior (upper, supine) side."""
    z = frame.z.ravel()
    bottom, top = anatomy.rectum_extent_mm
    radius = anatomy.rectum_radius_mm
    taper = np.clip(0.55 + 0.45 * (z - bottom) / 20.0, 0.0, 1.0) * np.sqrt(np.clip((top - z) / 10.0, 0, 1))
    inside = (z >= bottom) & (z <= top)
    semi_x = np.where(inside, 1.15 * radius * taper, 0.0)
    semi_y = np.where(inside, 0.9 * radius * taper, 0.0)
    anterior_wall = -_prostate_posterior_mm(anatomy) + anatomy.rectum_indent_mm
    # Following the sacral curve: posterior above the prostate, slightly anterior towards the anus.
    center_y = (
        anterior_wall
        - 0.9 * radius
        - 0.008 * np.maximum(z - 10.0, 0.0) ** 2
        + 0.2 * np.maximum(-20.0 - z, 0.0)
    )
    center_x = -0.15 * np.maximum(z - 30.0, 0.0)  # the rectosigmoid turns to the patient's left
    rectum = swept_ellipse(frame, center_x, center_y, semi_x, semi_y) & ~prostate
    lumen = swept_ellipse(frame, center_x, center_y, semi_x - WALL_MM, semi_y - WALL_MM) & rectum
    gas = np.zeros(frame.shape, dtype=bool)
    if anatomy.rectal_gas_radius_mm > 0:
        k = int(np.argmin(np.abs(z - anatomy.rectal_gas_z_mm)))
        center = (center_x[k], center_y[k] + 0.4 * semi_y[k], z[k])
        gas = ellipsoid(frame, center, (anatomy.rectal_gas_radius_mm,) * 3) & lumen
    return rectum, lumen, gas


def _bladder(frame: Frame, anatomy: PelvisAnatomy, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bladder (outer wall) seated on the prostate base, and its urine-filled lumen."""
    unit = 4.0 / 3.0 * np.pi * float(np.prod(BLADDER_SHAPE))
    scale = (anatomy.bladder_volume_cc * 1000.0 / unit) ** (1.0 / 3.0)
    semi = tuple(float(s * scale) for s in BLADDER_SHAPE)
    shift_ap, shift_si = anatomy.bladder_shift_mm
    center = (0.0, 14.0 + shift_ap, 2.0 + semi[2] + shift_si)
    bladder = ellipsoid(frame, center, semi) & ~neighbours
    lumen = ellipsoid(frame, center, tuple(s - WALL_MM for s in semi)) & bladder
    return bladder, lumen


def _bones(frame: Frame, anatomy: PelvisAnatomy) -> _Bones:
    """Femurs with the scored femoral heads, and the pelvic ring (acetabula, pubis, ischia, sacrum, ilia)."""
    r = anatomy.femoral_head_radius_mm
    lateral = anatomy.femoral_head_lateral_mm
    scored: dict[str, np.ndarray] = {}
    femurs = np.zeros(frame.shape, dtype=bool)
    acetabula = np.zeros(frame.shape, dtype=bool)
    for side, sign in (("R", 1.0), ("L", -1.0)):  # RAS +x is the patient's right
        head_center = (sign * lateral, 5.0, 5.0)
        trochanter = (sign * (lateral + 38.0), -2.0, -25.0)
        head = ellipsoid(frame, head_center, (r, r, r))
        neck = tube(frame, np.array([head_center, trochanter]), 0.6 * r)
        shaft = tube(frame, np.array([trochanter, (sign * (lateral + 33.0), 0.0, -90.0)]), 15.0)
        scored[side] = (head | neck | shaft) & frame.full(frame.z >= LESSER_TROCHANTER_Z_MM)
        femurs |= head | neck | shaft
        outer = ellipsoid(frame, head_center, (r + 8.0,) * 3)
        socket = outer & ~ellipsoid(frame, head_center, (r + 2.0,) * 3)
        medial = frame.full((sign * frame.x <= lateral) & (frame.z >= head_center[2] - 12.0))
        acetabula |= socket & medial

    pubis = tube(
        frame,
        np.array([(-60.0, 28.0, 10.0), (-15.0, 58.0, -8.0), (15.0, 58.0, -8.0), (60.0, 28.0, 10.0)]),
        10.0,
    )
    ischia = np.zeros(frame.shape, dtype=bool)
    iliac_wings = np.zeros(frame.shape, dtype=bool)
    for sign in (1.0, -1.0):
        ischia |= tube(
            frame,
            np.array([(sign * 15.0, 55.0, -22.0), (sign * 45.0, 22.0, -40.0), (sign * 55.0, -25.0, -40.0)]),
            9.0,
        )
        iliac_wings |= tube(
            frame,
            np.array([(sign * 55.0, -85.0, 55.0), (sign * 105.0, -55.0, 80.0), (sign * 125.0, -10.0, 100.0)]),
            9.0,
        )
    z = frame.z.ravel()
    above_tip = np.maximum(z + 25.0, 0.0)  # the coccyx tip is at z = -25 mm
    sacrum = swept_ellipse(
        frame,
        np.zeros_like(z),
        -70.0 - 0.22 * above_tip,
        np.where(z < -25.0, 0.0, 8.0 + 0.55 * above_tip),
        np.full_like(z, 9.0),
    )
    pelvis = (acetabula | pubis | ischia | iliac_wings | sacrum) & ~femurs
    return _Bones(scored["L"], scored["R"], femurs, pelvis)


def _bowel(
    frame: Frame,
    anatomy: PelvisAnatomy,
    rng: np.random.Generator,
    abdomen: np.ndarray,
    excluded: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Small-bowel loops (random smooth tubes) above and behind the bladder dome, with gas pockets."""
    low = np.array([-80.0, -45.0, anatomy.bowel_floor_z_mm])
    high = np.array([80.0, 75.0, 98.0])
    loops = np.zeros(frame.shape, dtype=bool)
    gas = np.zeros(frame.shape, dtype=bool)
    for _ in range(anatomy.bowel_loops):
        points = [rng.uniform(low, high)]
        heading = rng.normal(size=3)
        for _ in range(6):
            heading = heading / np.linalg.norm(heading) + rng.normal(scale=0.6, size=3)
            step = 16.0 * heading / np.linalg.norm(heading)
            points.append(np.clip(points[-1] + step, low, high))
        radius = rng.uniform(10.0, 13.0)
        loops |= tube(frame, np.array(points), radius)
        if rng.random() < 0.5:
            pocket = points[int(rng.integers(len(points)))] + np.array([0.0, 0.4 * radius, 0.0])
            gas |= ellipsoid(frame, tuple(pocket), (0.5 * radius,) * 3)
    inner = abdomen & ~dilate_mm(frame, excluded, 3.0)
    bowel = loops & inner
    return bowel, gas & bowel
