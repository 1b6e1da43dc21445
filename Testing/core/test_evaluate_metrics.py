"""HI, Paddick CI, plan evaluation, the DVH table and the penalty reward (evaluate/metrics.py, reward.py)."""

import numpy as np
import pytest

from radagent.errors import InputError
from radagent.evaluate.dvh import StructureDoses
from radagent.evaluate.metrics import dvh_table, evaluate_plan, homogeneity_index, paddick_conformity_index
from radagent.evaluate.reward import RewardWeights, penalty_reward, plan_reward
from radagent.evaluate.scorecard import PROSTATE
from radagent.geometry import Grid
from radagent.patient import Case, Protocol, Structure

P_GY = 79.2


def tiny_case() -> Case:
    """A 4×10×10 CT (3 mm voxels): body box, PTV block in the middle, bladder and rectum blocks."""
    shape = (4, 10, 10)
    body = np.zeros(shape, bool)
    body[:, 1:9, 1:9] = True
    ptv = np.zeros(shape, bool)
    ptv[1:3, 4:6, 4:6] = True
    bladder = np.zeros(shape, bool)
    bladder[1:3, 2:4, 4:6] = True
    rectum = np.zeros(shape, bool)
    rectum[1:3, 6:8, 4:6] = True
    structures = (
        Structure("PTV", "target", ptv),
        Structure("Bladder", "oar", bladder),
        Structure("Rectum", "oar", rectum),
        Structure("Body", "body", body),
    )
    grid = Grid.from_spacing(shape, (3.0, 3.0, 3.0))
    return Case("tiny", np.zeros(shape), grid, structures, Protocol(P_GY, 44, PROSTATE))


def perfect_dose(case: Case) -> np.ndarray:
    return np.where(case.structure("PTV").mask, P_GY, 0.0).astype(np.float32)


def test_homogeneity_index_icru83():
    assert homogeneity_index(StructureDoses("PTV", np.full(50, 60.0), 0.1)) == 0.0
    doses = np.arange(1.0, 101.0)  # D2 = 99, D98 = 3, D50 = 51
    assert homogeneity_index(StructureDoses("PTV", doses, 0.1)) == pytest.approx((99 - 3) / 51)


def test_paddick_conformity_index():
    shape = (1, 1, 10)
    target = np.zeros(shape, bool)
    target[..., :4] = True
    body = np.ones(shape, bool)
    dose = np.zeros(shape)
    dose[..., :4] = 60.0
    assert paddick_conformity_index(dose, target, body, 60.0) == 1.0
    dose[..., 4:6] = 61.0  # spill: PIV = 6
    assert paddick_conformity_index(dose, target, body, 60.0) == pytest.approx(16 / (4 * 6))
    dose[..., :2] = 50.0  # under-covered: TV_PIV = 2, PIV = 4
    assert paddick_conformity_index(dose, target, body, 60.0) == pytest.approx(4 / (4 * 4))
    assert paddick_conformity_index(np.zeros(shape), target, body, 60.0) == 0.0


def test_evaluate_plan_reports_the_metrics_json_sections():
    case = tiny_case()
    evaluation = evaluate_plan(case, perfect_dose(case))
    report = evaluation.to_dict()
    assert set(report) == {"structures", "plan"}
    assert list(report["structures"]) == ["PTV", "Bladder", "Rectum", "Body"]
    assert list(report["structures"]["PTV"]) == [
        "role",
        "volume_cc",
        "mean_gy",
        "max_gy",
        "min_gy",
        "d0_03cc_gy",
        "d2_gy",
        "d5_gy",
        "d10_gy",
        "d50_gy",
        "d95_gy",
        "d98_gy",
    ]
    ptv = report["structures"]["PTV"]
    assert ptv["role"] == "target"
    assert ptv["volume_cc"] == pytest.approx(8 * 0.027)
    assert ptv["d95_gy"] == pytest.approx(P_GY) and ptv["d0_03cc_gy"] == pytest.approx(P_GY)
    plan = report["plan"]
    assert set(plan) == {
        "prescription_gy",
        "primary_target",
        "homogeneity_index",
        "conformity_index",
        "body_minus_targets_mean_gy",
        "r50",
        "target_levels",
        "score",
        "score_max",
        "reward",
        "smooth_score",
        "criteria",
    }
    assert plan["score"] == plan["score_max"] == 9.0
    assert plan["homogeneity_index"] == pytest.approx(0.0)
    assert plan["conformity_index"] == pytest.approx(1.0)
    assert plan["primary_target"] == "PTV" and plan["body_minus_targets_mean_gy"] == 0.0
    assert plan["r50"] == pytest.approx(1.0)  # all of the prescription isodose is the target
    (level,) = plan["target_levels"]
    assert level["name"] == "PTV" and level["dose_level_gy"] == P_GY
    assert level["homogeneity_index"] == plan["homogeneity_index"]
    assert level["conformity_index"] == plan["conformity_index"]
    assert plan["reward"] == 0.0
    assert len(plan["criteria"]) == 9
    assert set(plan["criteria"][0]) == {
        "label",
        "structure",
        "metric",
        "value",
        "full_credit",
        "zero_credit",
        "subscore",
    }


def test_evaluate_plan_rejects_a_dose_on_another_grid():
    case = tiny_case()
    with pytest.raises(InputError, match="dose_on_ct_grid"):
        evaluate_plan(case, np.zeros((2, 5, 5)))


def test_dvh_table_columns():
    case = tiny_case()
    dose = perfect_dose(case)
    table = dvh_table(case, dose, dose_step_gy=1.0)
    assert list(table) == ["dose_gy", "PTV", "Bladder", "Rectum", "Body"]
    axis = table["dose_gy"]
    assert axis[0] == 0.0 and axis[-1] >= P_GY and np.allclose(np.diff(axis), 1.0)
    assert all(len(column) == len(axis) for column in table.values())
    assert table["PTV"][0] == 100.0 and table["PTV"][79] == 100.0 and table["PTV"][80] == 0.0
    assert table["Bladder"][1] == 0.0
    body_fraction = 8 / np.count_nonzero(case.body.mask) * 100
    assert table["Body"][50] == pytest.approx(body_fraction)


def test_plan_evaluation_carries_the_dvhs():
    case = tiny_case()
    dose = perfect_dose(case)
    evaluation = evaluate_plan(case, dose, dvh_step_gy=1.0)
    table = evaluation.dvh_table()
    expected = dvh_table(case, dose, dose_step_gy=1.0)
    assert list(table) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(table[name], expected[name])
    axis, fraction = evaluation.dvh_curves()["PTV"]
    np.testing.assert_array_equal(axis, expected["dose_gy"])
    np.testing.assert_allclose(100 * fraction, expected["PTV"])


def test_without_a_score_card_the_scores_are_none():
    case = tiny_case()
    bare = Case(case.name, case.ct_hu, case.grid, case.structures, Protocol(P_GY, 44))
    plan = evaluate_plan(bare, perfect_dose(bare)).to_dict()["plan"]
    assert plan["score"] is None and plan["score_max"] is None and plan["smooth_score"] is None
    assert plan["criteria"] == [] and plan["reward"] == 0.0


def test_reward_is_zero_for_a_perfect_plan_and_negative_otherwise():
    case = tiny_case()
    assert plan_reward(case, perfect_dose(case)).reward == 0.0
    cold = perfect_dose(case) * 0.9  # PTV at 0.9 p: coverage term (0.05)² · w_cov · 100
    assert plan_reward(case, cold).reward == pytest.approx(-100 * 10 * 0.05**2)
    spill = perfect_dose(case)
    spill[case.structure("Bladder").mask] = P_GY / 2  # (1/2)² · w_k, plus the body term
    terms = plan_reward(case, spill)
    assert terms.oars == {"Bladder": pytest.approx(0.25), "Rectum": 0.0}
    body_outside = np.count_nonzero(case.body.mask & ~case.structure("PTV").mask)
    assert terms.body == pytest.approx(0.25 * 8 / body_outside)
    assert terms.reward == pytest.approx(-100 * (0.25 + 0.2 * terms.body))
    heavy = plan_reward(case, spill, RewardWeights(oar_overrides={"Bladder": 3.0}))
    assert heavy.reward == pytest.approx(-100 * (0.75 + 0.2 * terms.body))


def test_penalty_reward_hot_spot_term():
    dose = np.array([1.17, 1.0, 1.0, 1.0]) * P_GY
    target = np.array([True, True, True, True])
    terms = penalty_reward(dose, P_GY, target, {}, np.ones(4, bool))
    assert terms.hot_spot == pytest.approx(0.1**2 / 4)
    assert terms.coverage == 0.0 and terms.body == 0.0
    assert terms.reward == pytest.approx(-100 * 10 * 0.01 / 4)
