"""The shipped DQN agents: small, documented, trained on other variants than they are evaluated on, and
working on a held-out variant (CI evaluates them; benchmarks/reproduce_agents.sh trains them)."""

import json

import pytest

pytest.importorskip("torch")

from radagent.agents.dqn import load_checkpoint
from radagent.cli import main
from radagent.dose import DoseEngineSettings
from radagent.errors import InputError

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=8.0)


@pytest.mark.parametrize("env_name", ["gantry", "tpp"])
def test_shipped_checkpoints_are_small_documented_and_trained_on_other_variants(env_name):
    from radagent.agents import trained_agent

    folder = trained_agent(env_name).needs.trained.folder()
    checkpoint = load_checkpoint(folder)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5e6
    training = checkpoint.record["training"]
    assert training["variants"] == "0-29" and training["command"].startswith(
        f"radagent train --env {env_name}"
    )
    assert checkpoint.spec["strict"]["env"] == env_name and (folder / "train_log.jsonl").is_file()
    assert (folder / "README.md").read_text().count("radagent train") >= 1


def test_shipped_gantry_agent_plans_a_held_out_variant():
    from radagent.agents import get_agent
    from radagent.cases import load_case

    result = get_agent("dqn-gantry").run(load_case("prostate", 30))
    assert result.agent == "dqn-gantry" and len(set(result.angles_deg)) == 7 and result.steps == 7
    assert sum(h["reward"] for h in result.history) == pytest.approx(result.reward, abs=1e-9)
    assert result.optimizer_calls == 7 and result.metrics["plan"]["reward"] == pytest.approx(result.reward)


def test_shipped_agent_refuses_a_case_with_other_roles():
    from radagent.agents import DQNTPPOptions, get_agent

    with pytest.raises(InputError, match=r"trained for another environment: .*scored_oars 2"):
        get_agent("dqn-tpp").run("prostate-4oar", DQNTPPOptions(engine=COARSE))


def test_compare_writes_tables_for_two_tpp_agents_on_one_variant(tmp_path):
    out = tmp_path / "cmp"
    arguments = ["compare", "--env", "tpp", "--variants", "30", "--agents", "tuner,dqn-tpp", "--quiet"]
    assert main([*arguments, "--agent-grid-mm", "5", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "comparison.csv",
        "comparison.json",
        "comparison.md",
        "learning_curve.png",
        "score_by_step.png",
    ]
    payload = json.loads((out / "comparison.json").read_text())
    assert [s["agent"] for s in payload["summary"]] == ["tuner", "dqn-tpp"]
    for run in payload["runs"]:
        assert (
            run["variant"] == 30
            and 0 <= run["score"] <= 9
            and run["start_score"] == payload["runs"][0]["start_score"]
        )
        assert run["score"] >= run["start_score"] - 1e-9 or run["agent"] == "dqn-tpp"
    assert "| tuner | 1 |" in (out / "comparison.md").read_text()
