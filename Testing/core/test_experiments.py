"""Agent experiments (radagent.experiments) and the `radagent train` / `radagent compare` commands."""

import json

import numpy as np
import pytest

from radagent.cli import main
from radagent.errors import InputError
from radagent.experiments import (
    AgentChoice,
    markdown_table,
    parse_agents,
    parse_variants,
    plot_learning_curves,
    summarize,
)


def test_variant_lists_and_ranges():
    assert parse_variants("0-3") == (0, 1, 2, 3)
    assert parse_variants("30, 32,35-36,32") == (30, 32, 35, 36)
    for bad in ("", "a-b", "5-2", "1,,2", "-3"):
        with pytest.raises(InputError):
            parse_variants(bad)


def test_agents_are_checked_against_the_environment(tmp_path):
    assert parse_agents("random,equispaced", "gantry") == [AgentChoice("random"), AgentChoice("equispaced")]
    (tmp_path / "run").mkdir()
    choice = parse_agents(f"dqn-tpp:{tmp_path / 'run'},tuner", "tpp")[0]
    assert choice.checkpoint == str(tmp_path / "run") and choice.label == "dqn-tpp:run"
    with pytest.raises(InputError, match="chooses angles, not what the tpp environment"):
        parse_agents("greedy", "tpp")
    with pytest.raises(InputError, match="takes no checkpoint"):
        parse_agents(f"random:{tmp_path}", "gantry")
    with pytest.raises(InputError, match="does not exist"):
        parse_agents("dqn-gantry:nowhere/at/all", "gantry")
    with pytest.raises(InputError, match="unknown agent"):
        parse_agents("dqn", "gantry")
    with pytest.raises(InputError, match="listed twice"):
        parse_agents("random,random", "gantry")


def rows():
    base = {"score_max": 9.0, "target_d95_gy": 79.2, "target_d2_gy": 82.0, "hi": 0.05, "ci": 0.8}
    return [
        {"agent": "a", "variant": 30, "reward": -10.0, "score": 9.0, "at_max": True, "start_score": 6.0,
         "Rectum_mean_gy": 30.0, "steps": 3, "optimizer_calls": 4, "wall_s": 1.0, **base},
        {"agent": "a", "variant": 31, "reward": -12.0, "score": 7.0, "at_max": False, "start_score": 5.0,
         "Rectum_mean_gy": 34.0, "steps": 20, "optimizer_calls": 21, "wall_s": 3.0, **base},
        {"agent": "b", "variant": 30, "reward": -11.0, "score": 8.0, "at_max": False, "start_score": 6.0,
         "Rectum_mean_gy": 31.0, "steps": 1, "optimizer_calls": 19, "wall_s": 2.0, **base},
    ]  # fmt: skip


def test_summary_has_mean_sd_sem_and_the_fraction_at_maximum():
    a, b = summarize(rows())
    assert a["n"] == 2 and a["score"]["mean"] == 8.0 and a["score"]["sd"] == pytest.approx(np.sqrt(2))
    assert a["score"]["sem"] == pytest.approx(1.0) and a["fraction_at_max"] == 0.5
    assert a["Rectum_mean_gy"]["mean"] == 32.0 and b["score"]["sd"] == 0.0 and b["fraction_at_max"] == 0.0
    table = markdown_table([a, b], "tpp")
    assert "| agent | n | start score | reward R | score | at max |" in table
    assert "| a | 2 | 5.50 ± 0.71 | -11.000 ± 1.414 | 8.00 ± 1.41 | 50 % |" in table
    assert "Rectum mean Gy" in table and table.count("\n") == 4


def test_learning_curve_png(tmp_path):
    log = tmp_path / "train_log.jsonl"
    records = [
        {"step": 20 * (n + 1), "return": float(n), "final_score": 5.0 + n / 50, "final_plan_reward": -9.0}
        for n in range(120)
    ]
    log.write_text("\n".join(json.dumps(r) for r in records))
    plot_learning_curves({"dqn-tpp": log}, tmp_path / "curve.png", "tpp")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.write_text("{broken")
    with pytest.raises(InputError, match="not JSON lines"):
        plot_learning_curves({"dqn-tpp": log}, tmp_path / "curve.png", "tpp")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--env", "tpp", "--steps", "5", "--variants", "5-2"], "runs backwards"),
        (["train", "--env", "tpp", "--steps", "5", "--hp", "colour=3"], "not a DQN hyperparameter"),
        (["train", "--env", "tpp", "--steps", "5", "--hp", "gamma=2"], "gamma must lie in"),
        (["train", "--env", "tpp", "--steps", "0"], "must be at least 1"),
        (["train", "--env", "tpp", "--steps", "5", "--resume"], "holds no training run"),
        (["train", "--env", "tpp", "--steps", "5", "--case", "nowhere"], "unknown case"),
        (["compare", "--env", "tpp", "--agents", "greedy"], "chooses angles"),
        (["compare", "--env", "gantry", "--agents", "random", "--case", "nowhere"], "unknown case"),
    ],
)
def test_bad_experiment_arguments_exit_2_with_one_line(tmp_path, capsys, arguments, message):
    out = tmp_path / "out"
    assert main([*arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("radagent: error:") and message in error and error.count("\n") == 1
    assert not out.exists()


def test_train_refuses_a_non_empty_folder_without_resume(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert main(["train", "--env", "tpp", "--steps", "5", "--out", str(tmp_path)]) == 2
    assert "is not empty; use --resume" in capsys.readouterr().err


def test_a_comparison_refuses_an_agent_that_cannot_plan_the_case_before_running_any(monkeypatch):
    from radagent.experiments import AgentChoice, run_comparison

    def started(*args):  # the first run's progress scope: no run may begin
        raise AssertionError("a run started before the comparison was refused")

    monkeypatch.setattr("radagent.experiments.scaled", started)
    with pytest.raises(InputError, match="dqn-tpp was trained with score card 'prostate'"):
        run_comparison([AgentChoice("tuner"), AgentChoice("dqn-tpp")], "liver", [60, 61])
