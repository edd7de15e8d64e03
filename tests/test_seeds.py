"""Several seeds of one recipe (config.num_seeds): one run per seed, a table of mean ± std, claims judged
against the seed-to-seed spread; on the toy recipe."""

import json
import os
import types

import jax
import ml_collections
import numpy as np
import pytest

from jaxface.train import driver, writers
from jaxface.train.driver import Claim
from tests.test_core import starts
from tests.toy_recipe import Decoder, toy_stages


def student_error(store) -> float:
    """Mean squared error of the toy student's output against the frozen pipeline's, on fixed inputs."""
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4)
    student = Decoder().apply(store.load("student")["student"], x[:, :8] @ np.ones((4, 8), np.float32) * 0.1)
    return float(np.mean(np.asarray(student) ** 2))


def toy_recipe():
    """joint (the 'teacher') is trained by the first seed only; later seeds import it."""
    def evaluate(config, store, data, mesh, out_dir):
        return driver.Report(title="toy", columns=["arm", "score", "params"],
                             rows=[{"arm": "student", "score": student_error(store), "params": 9},
                                   {"arm": "baseline", "score": 0.5 * student_error(store) + 0.01 * config.seed,
                                    "params": 9}])

    def share_across_seeds(config, first_workdir):
        config.teacher = os.path.join(first_workdir, "checkpoints", "joint")
        return config

    return types.SimpleNamespace(
        validate_config=lambda c: None, load_data=lambda c: None, evaluate=evaluate,
        make_stages=lambda c, data: toy_stages(seed=c.seed)[1:] if c.teacher else toy_stages(seed=c.seed),
        imported_stages=lambda c: {"joint": c.teacher} if c.teacher else {},
        share_across_seeds=share_across_seeds,
        CLAIMS=(Claim("baseline", "student", "score", "the baseline beats the student", higher_is_better=False),))


def toy_config(num_seeds):
    return ml_collections.ConfigDict(dict(
        seed=5, num_seeds=num_seeds, teacher="", data=dict(eval_split="test"),
        train=dict(checkpoint_every_steps=3, keep_checkpoints=2, log_every_seconds=60.0)))


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seeds")
    return workdir, driver.train_and_evaluate(toy_recipe(), toy_config(3), str(workdir))


def test_each_seed_is_its_own_run_and_the_table_is_mean_and_std_over_them(three_seeds):
    workdir, results = three_seeds
    per_seed = []
    for seed in (5, 6, 7):
        with open(workdir / f"seed_{seed}" / "results.json") as f:
            per_seed.append({r["arm"]: r["score"] for r in json.load(f)["rows"]})
        with open(workdir / f"seed_{seed}" / "config.json") as f:
            assert json.load(f)["seed"] == seed
    scores = np.array([s["student"] for s in per_seed])
    assert len(set(scores)) == 3  # the seeds differ: init and batches follow config.seed
    stats = results["over_seeds"]["student"]["score"]
    assert stats["values"] == pytest.approx(list(scores))
    assert stats["mean"] == pytest.approx(scores.mean()) and stats["std"] == pytest.approx(scores.std(ddof=1))
    with open(workdir / "results.md") as f:
        md = f.read()
    assert f"| student | {writers.format_value(scores.mean())} ± {writers.format_value(scores.std(ddof=1))} | 9 |" in md
    assert "3 seeds [5, 6, 7]" in md
    with open(workdir / "config.json") as f:
        assert json.load(f)["num_seeds"] == 3  # what experiments.evaluate / predict read back


def test_later_seeds_reuse_what_the_recipe_shares_and_a_rerun_trains_nothing(three_seeds):
    workdir, results = three_seeds
    assert os.path.isdir(workdir / "seed_5" / "checkpoints" / "joint")
    for seed in (6, 7):
        assert not os.path.exists(workdir / f"seed_{seed}" / "checkpoints" / "joint")
    before = {s: starts(workdir / f"seed_{s}") for s in (5, 6, 7)}
    again = driver.train_and_evaluate(toy_recipe(), toy_config(3), str(workdir))
    assert {s: starts(workdir / f"seed_{s}") for s in (5, 6, 7)} == before
    assert again["over_seeds"] == results["over_seeds"]


def test_the_claim_is_judged_against_the_spread_over_seeds(three_seeds):
    _, results = three_seeds
    judged = results["summary"]["claims"]["baseline_vs_student"]
    per_seed = results["over_seeds"]
    paired = -(np.array(per_seed["baseline"]["score"]["values"]) - np.array(per_seed["student"]["score"]["values"]))
    assert judged["gain"] == pytest.approx(paired.mean())  # lower is better: the sign is flipped
    assert judged["seeds"] == 3 and judged["positive_in"] == int((paired > 0).sum())


def test_a_finished_several_seed_run_is_re_evaluated_seed_by_seed(three_seeds, tmp_path):
    workdir, results = three_seeds
    again = driver.evaluate_run(toy_recipe(), toy_config(3), str(workdir), split="validation", out_dir=str(tmp_path))
    assert again["over_seeds"] == results["over_seeds"]  # the toy's evaluation ignores the split
    for seed in (5, 6, 7):
        assert os.path.isfile(tmp_path / f"seed_{seed}" / "results.json")
    assert os.path.isfile(tmp_path / "results.md")
    assert driver.final_model_workdir(toy_config(3), "W") == os.path.join("W", "seed_5")
    assert driver.final_model_workdir(toy_config(1), "W") == "W"


def table(values_by_seed):
    return [{"columns": ["arm", "m"], "rows": [{"arm": a, "m": v} for a, v in seed.items()]} for seed in values_by_seed]


@pytest.mark.parametrize("method, baseline, verdict, beyond", [
    ((0.30, 0.31, 0.29), (0.10, 0.11, 0.09), "holds beyond the spread", True),
    ((0.12, 0.20, 0.10), (0.10, 0.11, 0.09), "holds on average, inside the spread", False),
    ((0.09, 0.10, 0.08), (0.10, 0.11, 0.09), "does NOT hold", False),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), "does NOT hold", False),  # no gain and no spread is no claim
])
def test_judge_claims_verdicts(method, baseline, verdict, beyond):
    results = table([{"m1": a, "b": b} for a, b in zip(method, baseline)])
    notes, summary = driver.judge_claims([Claim("m1", "b", "m")], results)
    assert notes[0].endswith(f"-> {verdict}.")
    assert summary["m1_vs_b"]["beyond_spread"] is beyond
    assert summary["m1_vs_b"]["bar"] == pytest.approx(2 * max(np.std(method, ddof=1), np.std(baseline, ddof=1)))


def test_one_seed_says_it_cannot_judge_the_spread():
    notes, summary = driver.judge_claims([Claim("m1", "b", "m")], table([{"m1": 0.3, "b": 0.1}]))
    assert "needs config.num_seeds >= 3" in notes[0] and summary["m1_vs_b"]["beyond_spread"] is False


def test_a_bad_number_of_seeds_is_one_line():
    with pytest.raises(ValueError, match="config.num_seeds=0 must be an integer >= 1"):
        driver.train_and_evaluate(toy_recipe(), toy_config(0), "/nonexistent/never-written")
    assert jax.process_count() == 1


def test_rows_sharing_a_first_column_are_named_by_their_text_and_claims_select_them_by_columns():
    """mutual's table: one arm has a row per model; a claim names its row by {column: value}."""
    def seed(a, b, s):
        return {"columns": ["arm", "model", "ap"], "rows": [{"arm": "mutual", "model": "a", "ap": a},
                                                            {"arm": "mutual", "model": "b", "ap": b},
                                                            {"arm": "self", "model": "a", "ap": s}]}
    results = [seed(0.30, 0.20, 0.10), seed(0.32, 0.21, 0.11), seed(0.31, 0.22, 0.12)]
    rows, stats = driver.aggregate_over_seeds(results, [0, 1, 2])
    assert list(stats) == ["mutual / a", "mutual / b", "self / a"]
    assert stats["mutual / b"]["ap"]["values"] == [0.20, 0.21, 0.22] and rows[1]["model"] == "b"
    claim = Claim({"arm": "mutual", "model": "a"}, {"arm": "self", "model": "a"}, "ap")
    _, summary = driver.judge_claims([claim], results)
    assert summary["mutual_a_vs_self_a"]["gain"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"2 rows of the results table match \{'arm': 'mutual'\}"):
        driver.judge_claims([Claim("mutual", "self", "ap")], results)
    results[2]["rows"][1]["model"] = "c"  # e.g. the network a selection chose: shown per seed
    rows, _ = driver.aggregate_over_seeds(results, [0, 1, 2])
    assert rows[1]["model"] == "b / b / c" and rows[0]["model"] == "a"
    results[2]["rows"][2]["arm"] = "ellipse"
    with pytest.raises(ValueError, match="seed 2's results table has other rows than seed 0's"):
        driver.aggregate_over_seeds(results, [0, 1, 2])


def test_reproduce_runs_each_recipe_over_seeds_and_reports_its_claims(tmp_path):
    from experiments import reproduce

    found = reproduce.run_recipes({"toy": (toy_recipe(), toy_config(1))}, str(tmp_path), seeds=2)
    md = reproduce.write_report(found, str(tmp_path), 2, "default")
    assert (tmp_path / "toy" / "seed_6" / "results.json").exists() and not (tmp_path / "toy" / "seed_7").exists()
    judged = found["toy"]["results"]["summary"]["claims"]["baseline_vs_student"]
    assert f"- {judged['text']} ({judged['column']}): gain {judged['gain']:+.4g}" in md and "of 2 seeds" in md
    assert judged["method"][1] - judged["baseline"][1] != 0  # per-seed values, the figure's points
    assert "| student | " in md and (tmp_path / "RESULTS.md").read_text() == md
    assert json.loads((tmp_path / "RESULTS.json").read_text())["toy"]["seeds"] == [5, 6]
    assert (tmp_path / "results" / "toy_claims.png").stat().st_size > 0
    assert reproduce.main(["--recipes=distill,nope"]) == 2

    # --report_only: the same report from the seeds' results.json, nothing trained, the wall time kept
    (tmp_path / "toy" / "results.md").unlink()
    metrics = (tmp_path / "toy" / "seed_6" / "metrics.jsonl").read_text()
    again = reproduce.report_recipes({"toy": (toy_recipe(), toy_config(1))}, str(tmp_path), seeds=2)
    assert reproduce.write_report(again, str(tmp_path), 2, "default") == md
    assert (tmp_path / "toy" / "results.md").exists()
    assert (tmp_path / "toy" / "seed_6" / "metrics.jsonl").read_text() == metrics
    with pytest.raises(FileNotFoundError, match="seed_7"):
        reproduce.report_recipes({"toy": (toy_recipe(), toy_config(1))}, str(tmp_path), seeds=3)


def test_every_config_takes_num_seeds_from_the_command_line():
    import importlib

    from jaxface.recipes import RECIPES

    for name in RECIPES:  # a locked config refuses a key it lacks: `--config.num_seeds=3` needs it there
        config = importlib.import_module(f"configs.{name}").get_config()
        assert isinstance(config.num_seeds, int) and config.num_seeds >= 1, name
