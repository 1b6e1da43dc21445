"""Plan evaluation on the CT grid (METHOD §4): DVH metrics, HI/CI, score cards, smooth score, reward."""

from radagent.evaluate.dvh import StructureDoses, dose_on_ct_grid, hottest_minimum_gy, hottest_voxel_count
from radagent.evaluate.metrics import (
    PlanEvaluation,
    StructureMetrics,
    cumulative_dvhs,
    dvh_table,
    evaluate_plan,
    homogeneity_index,
    paddick_conformity_index,
    structure_doses,
)
from radagent.evaluate.reward import RewardTerms, RewardWeights, penalty_reward, plan_reward
from radagent.evaluate.scorecard import (
    CSHAPE,
    LIVER,
    PROSTATE,
    PROSTATE_4OAR,
    WATER,
    Criterion,
    CriterionResult,
    ScoreCard,
    card_by_name,
    smooth_score,
    total_score,
)

__all__ = [
    "CSHAPE",
    "LIVER",
    "PROSTATE",
    "PROSTATE_4OAR",
    "WATER",
    "Criterion",
    "CriterionResult",
    "PlanEvaluation",
    "RewardTerms",
    "RewardWeights",
    "ScoreCard",
    "StructureDoses",
    "StructureMetrics",
    "card_by_name",
    "cumulative_dvhs",
    "dose_on_ct_grid",
    "dvh_table",
    "evaluate_plan",
    "homogeneity_index",
    "hottest_minimum_gy",
    "hottest_voxel_count",
    "paddick_conformity_index",
    "penalty_reward",
    "plan_reward",
    "smooth_score",
    "structure_doses",
    "total_score",
]
