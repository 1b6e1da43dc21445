"""IEC 61217 gantry geometry: where beams come from in the patient's RAS frame."""

import numpy as np
import pytest

from radagent.beams import BeamGeometry, equispaced_angles, iec_to_ras_matrix, parse_angles


def test_gantry_zero_hfs_comes_from_anterior():
    beam = BeamGeometry(0.0, (0.0, 0.0, 0.0))
    np.testing.assert_allclose(beam.source_ras, [0.0, 1000.0, 0.0], atol=1e-9)  # +y = anterior
    np.testing.assert_allclose(beam.direction_ras, [0.0, -1.0, 0.0], atol=1e-12)


def test_gantry_ninety_hfs_enters_from_patient_left():
    beam = BeamGeometry(90.0, (10.0, 20.0, 30.0))
    # RAS +x is the patient's right, so the patient's left is −x.
    np.testing.assert_allclose(beam.source_ras, [10.0 - 1000.0, 20.0, 30.0], atol=1e-9)
    np.testing.assert_allclose(beam.direction_ras, [1.0, 0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    ("position", "expected_source_x"), [("HFS", -1), ("HFP", 1), ("FFS", 1), ("FFP", -1)]
)
def test_ninety_degree_source_side_per_patient_position(position, expected_source_x):
    beam = BeamGeometry(90.0, (0.0, 0.0, 0.0), patient_position=position)
    assert np.sign(beam.source_ras[0]) == expected_source_x


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS", "FFP"])
def test_iec_to_ras_is_a_proper_rotation(position):
    matrix = iec_to_ras_matrix(position)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0)


@pytest.mark.parametrize("angle", [0.0, 37.0, 90.0, 180.0, 271.5])
def test_beam_frame_is_orthonormal_and_isocentre_on_axis(angle):
    beam = BeamGeometry(angle, (5.0, -3.0, 12.0))
    axes = np.stack([beam.u_axis_ras, beam.v_axis_ras, beam.direction_ras])
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)
    uvw = beam.to_beam_frame(np.array([beam.isocenter_ras]))
    np.testing.assert_allclose(uvw[0], [0.0, 0.0, 1000.0], atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 72.0, 144.0, 216.0, 288.0, 90.0])
def test_beam_frame_is_matrads_bev_for_hfs(angle):
    """matRad / pyRadPlan: LPS = R_gantry·BEV, beam along BEV +y, source at BEV (0, −SAD, 0), R the
    counter-clockwise rotation about LPS z; so u = BEV x, v = BEV z, w = BEV y + SAD (couch 0, HFS)."""
    theta = np.deg2rad(angle)
    rotation = np.array(
        [[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]]
    )
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    beam = BeamGeometry(angle, (5.0, -3.0, 12.0))
    np.testing.assert_allclose(beam.u_axis_ras, lps_to_ras @ rotation[:, 0], atol=1e-12)
    np.testing.assert_allclose(beam.direction_ras, lps_to_ras @ rotation[:, 1], atol=1e-12)
    np.testing.assert_allclose(beam.v_axis_ras, lps_to_ras @ rotation[:, 2], atol=1e-12)
    source_ras = np.add(beam.isocenter_ras, lps_to_ras @ rotation @ [0.0, -1000.0, 0.0])
    np.testing.assert_allclose(beam.source_ras, source_ras, atol=1e-9)


def test_projection_to_isocentre_plane_is_divergent():
    beam = BeamGeometry(0.0, (0.0, 0.0, 0.0))
    # A point 10 mm lateral (u) and 100 mm beyond the isocentre projects to 10·1000/1100 mm.
    point = np.asarray(beam.isocenter_ras) + 10.0 * beam.u_axis_ras + 100.0 * beam.direction_ras
    np.testing.assert_allclose(beam.project_to_isocenter_plane(point[None])[0], [10 * 1000 / 1100, 0.0])


def test_angle_validation_and_parsing():
    with pytest.raises(ValueError, match=r"\[0, 360\)"):
        BeamGeometry(360.0, (0, 0, 0))
    assert parse_angles("0, 51.4,102.8") == (0.0, 51.4, 102.8)
    for text, message in [
        ("0,400", "out of range"),
        ("0,abc", "not a number"),
        ("10,10", "duplicate"),
        ("", "no gantry"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_angles(text)
    assert equispaced_angles(4) == (0.0, 90.0, 180.0, 270.0)
    assert len(equispaced_angles(7)) == 7
