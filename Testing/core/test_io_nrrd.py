"""NRRD volumes, Slicer segmentations and case assembly from files: round trips, conventions, errors."""

import nrrd
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from radagent.errors import InputError
from radagent.geometry import Grid
from radagent.io.inputs import CT_BODY_NAME, case_from_files, case_with_roles
from radagent.io.nrrd import read_volume, write_volume
from radagent.io.segmentation import read_labelmap, read_segmentation, write_segmentation
from radagent.patient import Protocol, Role


def oblique_grid():
    direction = Rotation.from_euler("xyz", [12.0, -25.0, 40.0], degrees=True).as_matrix()
    return Grid.from_spacing((7, 9, 11), (1.5, 2.0, 2.5), (10.0, -20.0, 30.0), direction)


def box(grid, k, j, i):
    mask = np.zeros(grid.shape, bool)
    mask[k, j, i] = True
    return mask


# --- volumes ---------------------------------------------------------------------------------------


def test_volume_round_trip_with_oblique_grid_is_exact(tmp_path):
    grid = oblique_grid()
    values = np.random.default_rng(1).normal(size=grid.shape).astype(np.float32)
    path = tmp_path / "ct.nrrd"
    write_volume(path, values, grid)
    read, read_grid = read_volume(path)
    np.testing.assert_array_equal(read, values)
    assert read.dtype == np.float32 and read_grid.shape == grid.shape
    np.testing.assert_allclose(read_grid.ijk_to_ras, grid.ijk_to_ras, atol=1e-12)
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior" and header["encoding"] == "gzip"
    assert list(header["sizes"]) == [11, 9, 7]  # NRRD lists the fastest axis (i) first
    lps = np.diag([-1.0, -1.0, 1.0]) @ grid.ijk_to_ras[:3, :3]
    np.testing.assert_allclose(header["space directions"], lps.T, atol=1e-12)
    np.testing.assert_allclose(header["space origin"], [-10.0, 20.0, 30.0])
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nrrd"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("space", "flip"),
    [
        ("right-anterior-superior", (1, 1, 1)),
        ("left-anterior-superior", (-1, 1, 1)),
        ("left-posterior-superior", (-1, -1, 1)),
        ("scanner-xyz", (1, 1, 1)),  # taken as it stands, as Slicer's reader does
    ],
)
def test_read_converts_each_space_to_ras(tmp_path, space, flip):
    directions = np.array([[0.0, 2.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 0.0, 4.0]])  # rows: axes i, j, k
    origin = np.array([5.0, -6.0, 7.0])
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2)  # [k, j, i]
    path = tmp_path / "v.nrrd"
    nrrd.write(
        str(path),
        data,
        {"space": space, "space directions": directions, "space origin": origin},
        index_order="C",
    )
    values, grid = read_volume(path)
    np.testing.assert_array_equal(values, data)
    np.testing.assert_allclose(grid.ijk_to_ras[:3, :3], (directions * flip).T)
    np.testing.assert_allclose(grid.origin_ras, origin * flip)


def test_read_without_space_uses_spacings(tmp_path):
    path = tmp_path / "plain.nrrd"
    nrrd.write(str(path), np.zeros((2, 3, 4), np.uint8), {"spacings": [0.5, 1.5, 2.5]}, index_order="C")
    _, grid = read_volume(path)
    np.testing.assert_allclose(grid.ijk_to_ras, np.diag([0.5, 1.5, 2.5, 1.0]))


def test_read_volume_errors(tmp_path):
    with pytest.raises(InputError, match=r"not found.*missing\.nrrd"):
        read_volume(tmp_path / "missing.nrrd")
    text = tmp_path / "notes.nrrd"
    text.write_text("just text\n")
    with pytest.raises(InputError, match=r"notes\.nrrd is not a readable NRRD"):
        read_volume(text)
    four_d = tmp_path / "4d.nrrd"
    nrrd.write(str(four_d), np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="3D volume"):
        read_volume(four_d)
    bad = tmp_path / "bad_geometry.nrrd"
    directions = np.array([[1.0, 0.0, 0.0], [0.0, np.nan, 0.0], [0.0, 0.0, 1.0]])
    nrrd.write(str(bad), np.zeros((2, 2, 2), np.uint8), {"space": "RAS", "space directions": directions})
    with pytest.raises(InputError, match="NaN or infinite"):
        read_volume(bad)
    with pytest.raises(InputError, match="does not exist"):
        write_volume(tmp_path / "no" / "x.nrrd", np.zeros((2, 2, 2)), Grid.from_spacing((2, 2, 2), (1, 1, 1)))


def test_write_replaces_an_existing_file(tmp_path):
    grid = Grid.from_spacing((2, 3, 4), (1.0, 1.0, 1.0))
    path = tmp_path / "dose.nrrd"
    write_volume(path, np.zeros(grid.shape, np.float32), grid)
    write_volume(path, np.ones(grid.shape, np.float32), grid)
    assert np.all(read_volume(path)[0] == 1.0)
    assert len(list(tmp_path.iterdir())) == 1


# --- segmentations ---------------------------------------------------------------------------------


def overlapping_segments(grid):
    return [
        ("PTV", box(grid, slice(1, 4), slice(2, 6), slice(3, 8))),
        ("Rectum", box(grid, slice(2, 6), slice(4, 8), slice(5, 10))),  # overlaps the PTV
        ("Bladder", box(grid, slice(5, 7), slice(0, 2), slice(0, 2))),  # shares the PTV's layer
    ]


def test_segmentation_round_trip_with_overlaps_uses_layers(tmp_path):
    grid = oblique_grid()
    segments = overlapping_segments(grid)
    path = tmp_path / "structures.seg.nrrd"
    write_segmentation(path, segments, grid)
    header = nrrd.read_header(str(path))
    assert header["dimension"] == 4 and header["kinds"] == ["list", "domain", "domain", "domain"]
    assert list(header["sizes"]) == [2, 11, 9, 7]
    assert np.all(np.isnan(header["space directions"][0]))
    assert [header[f"Segment{n}_Layer"] for n in range(3)] == ["0", "1", "0"]
    assert [header[f"Segment{n}_LabelValue"] for n in range(3)] == ["1", "1", "2"]
    assert header["Segment0_Extent"] == "3 7 2 5 1 3"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    read, read_grid = read_segmentation(path)
    assert [name for name, _ in read] == ["PTV", "Rectum", "Bladder"]
    for (_, mask), (_, expected) in zip(read, segments, strict=True):
        np.testing.assert_array_equal(mask, expected)
    np.testing.assert_allclose(read_grid.ijk_to_ras, grid.ijk_to_ras, atol=1e-12)


def test_single_layer_segmentation_is_3d_and_reads_as_a_labelmap(tmp_path):
    grid = Grid.from_spacing((6, 6, 6), (2.0, 2.0, 2.0), (-5.0, -5.0, -5.0))
    segments = [
        ("Body", box(grid, slice(0, 6), slice(0, 6), slice(0, 6)) & ~box(grid, 0, 0, 0)),
        ("PTV", box(grid, 0, 0, 0)),
    ]
    segments[0] = ("Body", segments[0][1] & ~box(grid, slice(2, 3), slice(2, 3), slice(2, 3)))
    path = tmp_path / "s.seg.nrrd"
    write_segmentation(path, segments, grid)
    assert nrrd.read_header(str(path))["dimension"] == 3
    masks, _ = read_labelmap(path, {"PTV": 2, "Body": 1})
    assert [n for n, _ in masks] == ["PTV", "Body"]
    np.testing.assert_array_equal(masks[0][1], segments[1][1])
    with pytest.raises(InputError, match=r"label 7 \('Rectum'\) does not occur.*labels: 1, 2"):
        read_labelmap(path, {"Rectum": 7})


def test_reads_one_segment_per_component_without_layer_keys(tmp_path):
    """Files from before shared layers: each segment its own component, voxel value 1, no Layer key."""
    grid = Grid.from_spacing((3, 4, 5), (1.0, 1.0, 1.0))
    a, b = box(grid, 0, slice(0, 2), slice(0, 3)), box(grid, slice(0, 2), 1, slice(1, 5))
    data = np.stack([a, b], axis=-1).astype(np.uint8)  # [k, j, i, segment]
    header = {
        "kinds": ["vector", "domain", "domain", "domain"],
        "space": "left-posterior-superior",
        "space directions": np.vstack([np.full(3, np.nan), np.diag([-1.0, -1.0, 1.0])]),
        "space origin": np.zeros(3),
        "Segment0_ID": "a",
        "Segment0_Name": "A",
        "Segment1_ID": "b",
        "Segment1_Name": "B",
    }
    path = tmp_path / "old.seg.nrrd"
    nrrd.write(str(path), data, header, index_order="C")
    segments, read_grid = read_segmentation(path)
    assert [n for n, _ in segments] == ["A", "B"]
    np.testing.assert_array_equal(segments[0][1], a)
    np.testing.assert_array_equal(segments[1][1], b)
    assert read_grid.same_as(grid)


def test_reads_legacy_4d_layout_with_segmentation_extent(tmp_path):
    grid = Grid.from_spacing((3, 4, 5), (1.0, 1.0, 1.0), (1.0, 2.0, 3.0))
    volumes = np.ones((2, 3, 4, 5), np.uint8)  # [segment, k, j, i]: all ones, clipped by the extents
    header = {
        "space dimension": 4,
        "space directions": np.eye(4),
        "space origin": np.array([1.0, 2.0, 3.0, 0.0]),
        "Segmentation_Extent": "10 14 20 23 30 32",
        "Segment0_Name": "Small",
        "Segment0_Extent": "11 12 20 21 30 30",
        "Segment1_Name": "Empty",
        "Segment1_Extent": "0 -1 0 -1 0 -1",
    }
    path = tmp_path / "legacy.seg.nrrd"
    nrrd.write(str(path), volumes, header, index_order="C")
    segments, read_grid = read_segmentation(path)
    np.testing.assert_array_equal(segments[0][1], box(grid, 0, slice(0, 2), slice(1, 3)))
    assert not segments[1][1].any()
    assert read_grid.same_as(grid)


def test_plain_labelmap_segments_are_named_like_slicer(tmp_path):
    grid = Grid.from_spacing((2, 2, 2), (1.0, 1.0, 1.0))
    labels = np.array([[[0, 3], [3, 0]], [[5, 0], [0, 0]]], np.uint8)
    path = tmp_path / "labels.nrrd"
    write_volume(path, labels, grid)
    segments, _ = read_segmentation(path)
    assert [n for n, _ in segments] == ["Segment_3", "Segment_5"]
    noisy = tmp_path / "ct.nrrd"
    write_volume(
        noisy,
        np.random.default_rng(0).integers(-1000, 1000, (12, 12, 12)).astype(np.int16),
        Grid.from_spacing((12, 12, 12), (1.0, 1.0, 1.0)),
    )
    with pytest.raises(InputError, match="not a segmentation"):
        read_segmentation(noisy)


def test_write_segmentation_rejects_bad_input(tmp_path):
    grid = Grid.from_spacing((2, 2, 2), (1.0, 1.0, 1.0))
    mask = np.ones(grid.shape, bool)
    with pytest.raises(InputError, match="duplicate segment name 'A'"):
        write_segmentation(tmp_path / "s.seg.nrrd", [("A", mask), ("A", mask)], grid)
    with pytest.raises(InputError, match="shape"):
        write_segmentation(tmp_path / "s.seg.nrrd", [("A", np.ones((3, 3, 3)))], grid)


# --- cases from files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patient_files(tmp_path_factory):
    """A CT on a 4 mm grid and a segmentation on a finer, shifted 2 mm grid, plus broken variants."""
    folder = tmp_path_factory.mktemp("patient")
    grid = Grid.from_spacing((24, 30, 36), (4.0, 4.0, 4.0), (-70.0, -58.0, -46.0))
    ras = grid.voxel_centers_ras().reshape(*grid.shape, 3)
    body = (ras[..., 0] / 60.0) ** 2 + (ras[..., 1] / 45.0) ** 2 <= 1.0
    ct = np.where(body, 20.0, -1000.0).astype(np.float32)
    write_volume(folder / "ct.nrrd", ct, grid)
    seg_grid = Grid.from_spacing((40, 50, 60), (2.0, 2.0, 2.0), (-59.0, -49.0, -39.0))
    seg_ras = seg_grid.voxel_centers_ras().reshape(*seg_grid.shape, 3)
    masks = {
        "External": (seg_ras[..., 0] / 60.0) ** 2 + (seg_ras[..., 1] / 45.0) ** 2 <= 1.0,
        "PTV": np.linalg.norm(seg_ras, axis=-1) <= 15.0,
        "Cord": np.linalg.norm(seg_ras[..., :2] - [0.0, -30.0], axis=-1) <= 6.0,
    }
    write_segmentation(folder / "structures.seg.nrrd", list(masks.items()), seg_grid)
    empty = {**masks, "Cord": np.zeros(seg_grid.shape, bool)}
    write_segmentation(folder / "empty.seg.nrrd", list(empty.items()), seg_grid)
    far_grid = Grid.from_spacing((4, 4, 4), (2.0, 2.0, 2.0), (500.0, 500.0, 500.0))
    write_segmentation(folder / "far.seg.nrrd", [("PTV", np.ones(far_grid.shape, bool))], far_grid)
    labels = np.zeros(grid.shape, np.uint8)
    labels[body] = 1
    labels[np.linalg.norm(ras, axis=-1) <= 15.0] = 2
    write_volume(folder / "labels.nrrd", labels, grid)
    nan_ct = ct.copy()
    nan_ct[5, 5, 5] = np.nan
    write_volume(folder / "nan_ct.nrrd", nan_ct, grid)
    return folder, grid, masks, seg_grid


def test_case_from_files_resamples_a_segmentation_on_another_grid(patient_files):
    folder, grid, masks, seg_grid = patient_files
    case = case_from_files(
        folder / "ct.nrrd",
        folder / "structures.seg.nrrd",
        targets=["ptv"],
        oars=["Cord"],
        prescription_gy=60.0,
        fractions=30,
    )
    assert [(s.name, s.role) for s in case.structures] == [
        ("External", Role.BODY),
        ("PTV", Role.TARGET),
        ("Cord", Role.OAR),
    ]
    assert case.grid.same_as(grid) and case.name == "ct"
    for structure in case.structures[1:]:
        expected_cc = masks[structure.name].sum() * seg_grid.voxel_volume_cc
        assert structure.voxel_count * grid.voxel_volume_cc == pytest.approx(expected_cc, rel=0.15)
    np.testing.assert_allclose(case.isocenter_ras, 0.0, atol=1.0)


def test_case_from_a_labelmap_with_label_names(patient_files):
    folder, *_ = patient_files
    case = case_from_files(
        folder / "ct.nrrd",
        folder / "labels.nrrd",
        labels={"Body": 1, "PTV": 2},
        targets=["PTV"],
        prescription_gy=2.0,
    )
    assert case.body.name == "Body" and case.targets[0].voxel_count > 0


def test_body_is_found_by_name_by_containment_or_from_the_ct():
    grid = Grid.from_spacing((8, 8, 8), (3.0, 3.0, 3.0))
    ct = np.full(grid.shape, -1000.0, np.float32)
    ct[1:7, 1:7, 1:7] = 0.0
    outline = box(grid, slice(1, 7), slice(1, 7), slice(1, 7))
    ptv = box(grid, slice(3, 5), slice(3, 5), slice(3, 5))
    protocol = Protocol(2.0)

    def body_of(masks, **roles):
        return case_with_roles(ct, grid, masks, protocol=protocol, name="t", **roles).body.name

    assert body_of([("PTV", ptv), ("SKIN", outline)], targets=["PTV"]) == "SKIN"
    assert body_of([("PTV", ptv), ("Contour", outline)], targets=["PTV"]) == "Contour"
    assert body_of([("PTV", ptv)], targets=["PTV"]) == CT_BODY_NAME
    assert body_of([("PTV", ptv), ("A", outline)], targets=["PTV"], body="a") == "A"
    with pytest.raises(InputError, match="several body-like"):
        body_of([("PTV", ptv), ("Body_1", outline), ("Skin_5mm", outline)], targets=["PTV"])
    with pytest.raises(InputError, match="more than one role: PTV"):
        body_of([("PTV", ptv)], targets=["PTV"], oars=["ptv"])


@pytest.mark.parametrize(
    ("structures", "roles", "message"),
    [
        ("structures.seg.nrrd", {"targets": ["Prostate"]}, r"'Prostate'.*available: External, PTV, Cord"),
        ("structures.seg.nrrd", {"targets": ["PTV"], "oars": ["Bladder"]}, "'Bladder'"),
        ("empty.seg.nrrd", {"targets": ["PTV"], "oars": ["Cord"]}, "'Cord' is empty"),
        ("far.seg.nrrd", {"targets": ["PTV"]}, "'PTV' does not overlap the CT"),
        ("missing.seg.nrrd", {"targets": ["PTV"]}, "missing.seg.nrrd"),
    ],
)
def test_case_from_files_errors_name_the_problem(patient_files, structures, roles, message):
    folder, *_ = patient_files
    with pytest.raises(InputError, match=message):
        case_from_files(folder / "ct.nrrd", folder / structures, prescription_gy=60.0, **roles)


def test_nan_ct_is_rejected(patient_files):
    folder, *_ = patient_files
    with pytest.raises(InputError, match=r"nan_ct\.nrrd contains NaN"):
        case_from_files(
            folder / "nan_ct.nrrd", folder / "structures.seg.nrrd", targets=["PTV"], prescription_gy=60.0
        )
