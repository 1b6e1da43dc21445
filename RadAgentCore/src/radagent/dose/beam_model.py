"""The 6 MV photon beam model: a finite-size pencil beam with three depth-dependent lateral Gaussians.

Dose per unit beamlet weight at a point with water-equivalent (radiological) depth ``d`` along the ray
from the source, distance ``w`` from the source along the central axis, and lateral offsets ``(du, dv)``
from the beamlet centre (physical mm in the plane at ``w``)::

    D = g · (SAD/w)² · T(r) · [ A₀(d)·P(du)·P(dv) + Σ_{c=1,2} A_c(d)·G_c(du)·G_c(dv) ]

* ``A_c(d) = a_c · β_c/(β_c − μ_c) · (e^{−μ_c d} − e^{−β_c d})``: build-up and attenuation of each
  component (the form of Bortfeld et al., Med Phys 20 (1993) 311, also used by matRad); ``A₀`` adds
  ``e·exp(−d/λ)`` for contaminant electrons, which give the surface dose.
* ``P``: the primary's lateral profile, the square beamlet (width ``b·w/SAD``) convolved with a
  Gaussian of width ``σ₀(d)`` (source size and electron transport; it sets the penumbra).
* ``G_c``: two scatter components, Gaussians about 20 mm wide at the surface that widen with depth,
  times the beamlet width (much wider than a beamlet, so the beamlet is taken as a point there). One
  builds up and fades early, the other builds up over tens of centimetres, so the scatter share grows
  with depth and field size, as the PDD and the output factors do.
* ``σ_c(d) = σ_c,0 + σ_c,1 · d``; ``T(r)`` takes the kernel smoothly to zero at the lateral cutoff
  (``r`` = distance from the beamlet centre in the plane at ``w``); ``g`` is the calibration
  (:func:`calibration_gy`): weight 1 on every beamlet of a 10 × 10 cm² field at SSD 1000 mm gives
  1 Gy at the depth of maximum dose on the axis.

The parameters are our own least-squares fit (:func:`fit_beam_model`) of this formula, exactly as the
engine evaluates it (5 mm beamlets, 50 mm cutoff with a 10 mm taper), to the representative
Varian-class 6 MV water data below. Achieved (10 × 10, SSD 100 cm): d_max 15 mm, PDD 86.5 % at 5 cm,
66.8 % at 10 cm, 38.6 % at 20 cm, 16.6 % at the surface and 49 % at 1.5 mm; PDD(10 cm) 59.4 % (3 × 3)
and 62.9 % (5 × 5); 80–20 % penumbra 4.2 / 5.7 / 7.3 mm at 1.5 / 10 / 20 cm. Fields wider than twice
the cutoff get no scatter from beyond it (as in matRad's 50 mm cutoff): the 20 × 20 field has the
PDD and output of the 10 × 10 (PDD(10 cm) 66.8 % instead of 71 %).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import brentq, least_squares
from scipy.special import erf

__all__ = [
    "DEFAULT_6MV",
    "REFERENCE_OUTPUT_FACTOR",
    "REFERENCE_PDD_PERCENT",
    "REFERENCE_PENUMBRA_MM",
    "BeamModel",
    "beamlet_dose",
    "calibration_gy",
    "central_axis_dose",
    "fit_beam_model",
    "fit_residuals",
    "lateral_taper",
    "penumbra_80_20_mm",
    "percent_depth_dose",
]

SAD_MM = 1000.0
REFERENCE_SSD_MM = 1000.0
REFERENCE_FIELD_MM = 100.0
FIT_BIXEL_MM = 5.0
FIT_CUTOFF_MM = 50.0
FIT_TAPER_MM = 10.0

# Target data (SSD 100 cm, open square fields in water), rounded representative values for a
# Varian-class (Clinac / TrueBeam) 6 MV flattened beam:
# * 10 × 10 cm² PDD: BJR Supplement 25 (1996), 6 MV central-axis data, and the TrueBeam representative
#   beam data (Chang et al., Med Phys 39 (2012) 6981; Glide-Hurst et al., JACMP 14 (2013) 4070):
#   d_max ≈ 15 mm, 86 % at 5 cm, 67 % at 10 cm, 38.5 % at 20 cm; intermediate depths follow the same
#   smooth curves. Build-up (0–10 mm, fitted with low weight): the surface dose of a 10 × 10 field is
#   ≈ 16 % (parallel-plate measurements, e.g. Apipunyasopon et al., JACMP 14 (2013) 4338).
# * Field-size dependence of the PDD (3 × 3, 5 × 5, 20 × 20 cm²) and the phantom-scatter factor S_p
#   at d_max relative to 10 × 10 (the model has no head scatter, so it is fitted to S_p, not S_cp).
# * 80–20 % penumbra of the 10 × 10 field at 15, 100 and 200 mm depth.
# They are not one machine's commissioning data; to model a particular linac, replace these tables with
# its measurements and run fit_beam_model().
REFERENCE_PDD_PERCENT: dict[float, dict[float, float]] = {
    100.0: {
        0.0: 16.0, 2.0: 58.0, 5.0: 84.0, 10.0: 97.0,
        15.0: 100.0, 20.0: 99.0, 30.0: 95.5, 40.0: 91.0, 50.0: 86.0, 60.0: 81.8, 70.0: 77.8,
        80.0: 74.0, 90.0: 70.4, 100.0: 67.0, 120.0: 60.0, 150.0: 50.7, 200.0: 38.5, 250.0: 29.1,
        300.0: 22.0,
    },
    30.0: {50.0: 81.5, 100.0: 59.5, 150.0: 43.5, 200.0: 31.8},
    50.0: {50.0: 84.0, 100.0: 63.0, 150.0: 46.8, 200.0: 34.8},
    200.0: {50.0: 87.8, 100.0: 71.0, 150.0: 55.3, 200.0: 42.8},
}
# Fit weights: build-up points (d ≤ 10 mm) are uncertain and detector-dependent; fields wider than twice
# the lateral cutoff cannot receive their far scatter in the engine (as in matRad), so the fit only
# leans on them lightly.
BUILDUP_DEPTH_LIMIT_MM = 10.0
LOW_FIT_WEIGHT = 0.3
REFERENCE_OUTPUT_FACTOR: dict[float, float] = {30.0: 0.95, 50.0: 0.97, 100.0: 1.0, 200.0: 1.03}
REFERENCE_PENUMBRA_MM: dict[float, float] = {15.0: 4.0, 100.0: 6.0, 200.0: 7.2}


@dataclass(frozen=True)
class BeamModel:
    """Parameters of the pencil-beam formula; component 0 is the primary, 1 and 2 the scatter."""

    relative_amplitude: tuple[float, float, float]
    attenuation_per_mm: tuple[float, float, float]
    buildup_per_mm: tuple[float, float, float]
    sigma_at_surface_mm: tuple[float, float, float]
    sigma_growth_mm_per_mm: tuple[float, float, float]
    electron_amplitude: float
    electron_range_mm: float
    name: str = "6 MV"

    def components(self, depth_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Amplitudes ``A_c(d)`` and widths ``σ_c(d)`` (mm), each of shape ``depth.shape + (3,)``."""
        depth = np.maximum(np.asarray(depth_mm, dtype=np.float64), 0.0)[..., None]
        mu = np.asarray(self.attenuation_per_mm)
        beta = np.asarray(self.buildup_per_mm)
        amplitude = (
            np.asarray(self.relative_amplitude)
            * beta / (beta - mu) * (np.exp(-mu * depth) - np.exp(-beta * depth))
        )
        amplitude[..., 0] += self.electron_amplitude * np.exp(-depth[..., 0] / self.electron_range_mm)
        sigma = np.asarray(self.sigma_at_surface_mm) + np.asarray(self.sigma_growth_mm_per_mm) * depth
        return amplitude, sigma

    def packed(self) -> np.ndarray:
        """The 17 parameters as one float64 array, in the order the numba kernels read them."""
        return np.array(
            [
                *self.relative_amplitude, *self.attenuation_per_mm, *self.buildup_per_mm,
                *self.sigma_at_surface_mm, *self.sigma_growth_mm_per_mm,
                self.electron_amplitude, self.electron_range_mm,
            ],
            dtype=np.float64,
        )


# Fitted by fit_beam_model() to the tables above (see Testing/core/test_dose_beam_model.py).
DEFAULT_6MV = BeamModel(
    relative_amplitude=(1.0, 0.079519, 0.89720),
    attenuation_per_mm=(0.0048058, 0.0080000, 0.0024060),
    buildup_per_mm=(0.30697, 0.085104, 0.0030027),
    sigma_at_surface_mm=(2.2200, 20.041, 19.835),
    sigma_growth_mm_per_mm=(0.0031847, 0.052376, 0.10000),
    electron_amplitude=0.16427,
    electron_range_mm=3.2571,
)


def lateral_taper(r2_mm2: np.ndarray, cutoff_mm: float, taper_mm: float) -> np.ndarray:
    """``T(r)``: 1 inside ``cutoff − taper``, 0 beyond ``cutoff``, a smoothstep in r² between."""
    inner2 = max(cutoff_mm - taper_mm, 0.0) ** 2
    t = np.clip((cutoff_mm**2 - np.asarray(r2_mm2, dtype=np.float64)) / (cutoff_mm**2 - inner2), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def beamlet_dose(
    model: BeamModel,
    depth_mm: np.ndarray,
    source_distance_mm: np.ndarray,
    du_iso_mm: np.ndarray,
    dv_iso_mm: np.ndarray,
    bixel_mm: float,
    cutoff_mm: float,
    taper_mm: float,
    sad_mm: float = SAD_MM,
) -> np.ndarray:
    """Uncalibrated dose of one beamlet (the formula above), offsets given in the isocentre plane (mm).

    The plain numpy statement of the model: the fit uses it and the tests check the numba kernels
    against it.
    """
    amplitude, sigma = model.components(depth_mm)
    scale = (np.asarray(source_distance_mm, dtype=np.float64) / sad_mm)[..., None]
    du = np.asarray(du_iso_mm, dtype=np.float64)[..., None] * scale
    dv = np.asarray(dv_iso_mm, dtype=np.float64)[..., None] * scale
    half = 0.5 * bixel_mm * scale
    root2_sigma = np.sqrt(2.0) * sigma
    primary_u = 0.5 * (erf((du + half) / root2_sigma) - erf((du - half) / root2_sigma))
    primary_v = 0.5 * (erf((dv + half) / root2_sigma) - erf((dv - half) / root2_sigma))
    point_weight = 2.0 * half / (np.sqrt(2.0 * np.pi) * sigma)
    scatter_u = point_weight * np.exp(-0.5 * (du / sigma) ** 2)
    scatter_v = point_weight * np.exp(-0.5 * (dv / sigma) ** 2)
    lateral = np.where(np.arange(3) == 0, primary_u * primary_v, scatter_u * scatter_v)
    r2 = du[..., 0] ** 2 + dv[..., 0] ** 2
    taper = lateral_taper(r2, cutoff_mm, taper_mm)
    inverse_square = (sad_mm / np.asarray(source_distance_mm, dtype=np.float64)) ** 2
    return inverse_square * taper * np.sum(amplitude * lateral, axis=-1)


def _field_beamlet_centres(field_mm: float, bixel_mm: float) -> np.ndarray:
    """Centres (n + ½)·bixel of the beamlets filling a square field of side ``field_mm`` at isocentre."""
    count = round(field_mm / bixel_mm)
    centres = (np.arange(count) - 0.5 * (count - 1)) * bixel_mm
    return centres


def central_axis_dose(
    model: BeamModel,
    depth_mm: np.ndarray,
    field_mm: float,
    ssd_mm: float = REFERENCE_SSD_MM,
    bixel_mm: float = FIT_BIXEL_MM,
    cutoff_mm: float = FIT_CUTOFF_MM,
    taper_mm: float = FIT_TAPER_MM,
    off_axis_mm: float = 0.0,
) -> np.ndarray:
    """Uncalibrated dose in water on (or ``off_axis_mm`` along u off) the axis of a square field.

    The field (side ``field_mm`` at the isocentre, SAD 1000 mm) is the sum of its beamlets with weight
    1, exactly as the engine adds them; the water surface is at ``ssd_mm`` from the source.
    """
    depth = np.atleast_1d(np.asarray(depth_mm, dtype=np.float64))
    distance = ssd_mm + depth
    point_iso = off_axis_mm * SAD_MM / distance
    centres = _field_beamlet_centres(field_mm, bixel_mm)
    centre_u, centre_v = (c.ravel() for c in np.meshgrid(centres, centres, indexing="ij"))
    reach_iso = cutoff_mm * SAD_MM / distance.min() + bixel_mm
    near = np.hypot(centre_u - point_iso.mean(), centre_v) <= reach_iso + np.ptp(point_iso)
    du = point_iso[:, None] - centre_u[near]
    dv = np.broadcast_to(-centre_v[near], du.shape)
    dose = beamlet_dose(model, depth[:, None], distance[:, None], du, dv, bixel_mm, cutoff_mm, taper_mm)
    return dose.sum(axis=1)


def _depth_of_maximum_dose(model: BeamModel, field_mm: float, **kwargs: float) -> tuple[float, float]:
    """(depth of maximum on the axis in mm, that maximum): a 1 mm scan refined by a parabola."""
    depths = np.arange(4.0, 41.0, 1.0)
    dose = central_axis_dose(model, depths, field_mm, **kwargs)
    best = int(np.clip(np.argmax(dose), 1, len(depths) - 2))
    below, at, above = dose[best - 1 : best + 2]
    curvature = below - 2.0 * at + above
    shift = 0.5 * (below - above) / curvature if curvature < 0 else 0.0
    depth = float(depths[best] + np.clip(shift, -1.0, 1.0))
    return depth, float(central_axis_dose(model, depth, field_mm, **kwargs)[0])


def calibration_gy(
    model: BeamModel,
    bixel_mm: float = FIT_BIXEL_MM,
    cutoff_mm: float = FIT_CUTOFF_MM,
    taper_mm: float = FIT_TAPER_MM,
) -> float:
    """Gy per unit of :func:`beamlet_dose`: a 10 × 10 cm² field at SSD 1000 mm gives 1 Gy at d_max."""
    _, maximum = _depth_of_maximum_dose(
        model, REFERENCE_FIELD_MM, bixel_mm=bixel_mm, cutoff_mm=cutoff_mm, taper_mm=taper_mm
    )
    return 1.0 / maximum


def percent_depth_dose(
    model: BeamModel,
    depth_mm: np.ndarray,
    field_mm: float,
    cutoff_mm: float = FIT_CUTOFF_MM,
    taper_mm: float = FIT_TAPER_MM,
) -> np.ndarray:
    """PDD (%) of a square field at SSD 1000 mm, normalized to its own maximum."""
    reach = {"cutoff_mm": cutoff_mm, "taper_mm": taper_mm}
    _, maximum = _depth_of_maximum_dose(model, field_mm, **reach)
    return 100.0 * central_axis_dose(model, depth_mm, field_mm, **reach) / maximum


def penumbra_80_20_mm(
    model: BeamModel,
    depth_mm: float,
    field_mm: float = REFERENCE_FIELD_MM,
    cutoff_mm: float = FIT_CUTOFF_MM,
    taper_mm: float = FIT_TAPER_MM,
) -> float:
    """Distance (mm, at depth) between the 80 % and 20 % points of a profile through the field's axis."""
    reach = {"cutoff_mm": cutoff_mm, "taper_mm": taper_mm}
    centre = float(central_axis_dose(model, depth_mm, field_mm, **reach)[0])
    edge = 0.5 * field_mm * (REFERENCE_SSD_MM + depth_mm) / SAD_MM

    def relative(x: float, level: float) -> float:
        return float(central_axis_dose(model, depth_mm, field_mm, off_axis_mm=x, **reach)[0]) / centre - level

    return brentq(relative, edge, edge + 40.0, args=(0.2,)) - brentq(
        relative, edge - 30.0, edge, args=(0.8,)
    )


def fit_residuals(
    model: BeamModel, cutoff_mm: float = FIT_CUTOFF_MM, taper_mm: float = FIT_TAPER_MM
) -> np.ndarray:
    """Weighted misfit to the reference tables: PDD points (%), S_p (% of 10 × 10), 3× penumbra (mm)."""
    reach = {"cutoff_mm": cutoff_mm, "taper_mm": taper_mm}
    residuals = []
    for field_mm, table in REFERENCE_PDD_PERCENT.items():
        depths = np.array(list(table))
        field_weight = _field_weight(field_mm, cutoff_mm)
        weight = np.where(depths <= BUILDUP_DEPTH_LIMIT_MM, LOW_FIT_WEIGHT, field_weight)
        pdd = percent_depth_dose(model, depths, field_mm, **reach)
        residuals.append(weight * (pdd - list(table.values())))
    reference = _depth_of_maximum_dose(model, REFERENCE_FIELD_MM, **reach)[1]
    residuals.append(
        [
            100.0
            * _field_weight(field_mm, cutoff_mm)
            * (_depth_of_maximum_dose(model, field_mm, **reach)[1] / reference - factor)
            for field_mm, factor in REFERENCE_OUTPUT_FACTOR.items()
        ]
    )
    residuals.append(
        [
            3.0 * (penumbra_80_20_mm(model, depth, **reach) - width)
            for depth, width in REFERENCE_PENUMBRA_MM.items()
        ]
    )
    return np.concatenate([np.asarray(r, dtype=np.float64) for r in residuals])


def _field_weight(field_mm: float, cutoff_mm: float) -> float:
    return LOW_FIT_WEIGHT if field_mm > 2.0 * cutoff_mm else 1.0


# Bounds keep the fit physical: 6 MV attenuation 0.002–0.008 /mm, widths growing ≤ 0.1 mm per mm of
# depth, primary narrower than 4 mm, scatter wider than 4 mm.
#                      a1 a2  μ0     μ1     μ2     β0   β1     β2     σ00  σ10 σ20  σ01 σ11 σ21 e  λ
_FIT_LOWER = np.array([0, 0, 0.002, 0.002, 0.002, 0.1, 0.003, 0.003, 0.5, 4, 4, 0, 0, 0, 0, 0.5])
_FIT_UPPER = np.array([5, 5, 0.008, 0.008, 0.008, 2.0, 0.5, 0.5, 4, 60, 100, 0.1, 0.1, 0.1, 1, 5])


def _from_vector(vector: np.ndarray, template: BeamModel) -> BeamModel:
    v = [float(x) for x in vector]
    return replace(
        template,
        relative_amplitude=(1.0, v[0], v[1]),
        attenuation_per_mm=tuple(v[2:5]),
        buildup_per_mm=tuple(v[5:8]),
        sigma_at_surface_mm=tuple(v[8:11]),
        sigma_growth_mm_per_mm=tuple(v[11:14]),
        electron_amplitude=v[14],
        electron_range_mm=v[15],
    )


def fit_beam_model(
    start: BeamModel = DEFAULT_6MV,
    cutoff_mm: float = FIT_CUTOFF_MM,
    taper_mm: float = FIT_TAPER_MM,
    max_evaluations: int | None = None,
) -> BeamModel:
    """Least-squares fit of the model, as the engine evaluates it, to the reference tables.

    Started from :data:`DEFAULT_6MV` it returns the same parameters (they are its converged result).
    """
    vector = np.clip(start.packed()[1:], _FIT_LOWER, _FIT_UPPER)
    result = least_squares(
        lambda v: fit_residuals(_from_vector(v, start), cutoff_mm, taper_mm),
        vector,
        bounds=(_FIT_LOWER, _FIT_UPPER),
        x_scale="jac",
        max_nfev=max_evaluations,
    )
    return _from_vector(result.x, start)
