"""Validation during training, best checkpoints, early stopping and derived stages, on the toy recipe."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxface.train import checkpoints, devices, driver, loop, writers
from jaxface.train.predict import Predictor
from jaxface.train.stages import Stage, Validation
from jaxface.train.validation import evaluate_model, select_better
from tests.test_core import Interrupt, InterruptingBatches, starts
from tests.toy_recipe import Decoder, toy_data, toy_stages

OPTIONS = loop.LoopOptions(seed=0, checkpoint_every_steps=3, keep_checkpoints=2, log_every_seconds=60)
VAL = toy_data(n=48, seed=1)  # held-out examples of the same task


def student_predict(variables, batch):
    return {"pred": Decoder().apply(variables, batch["x"] @ jnp.ones((4, 8)) * 0.1)}


def mse(outputs):
    return {"mse": float(np.mean((outputs["pred"] - outputs["y"]) ** 2)), "count": float(len(outputs["y"]))}


def validation(**kw):
    return Validation(**{**dict(model="student", predict=student_predict, source=VAL, metrics=mse, every_steps=2,
                                batch_size=16, keep_inputs=("y",), select="mse", mode="min"), **kw})


def validated_stages(data=None, steps=12, **kw):
    joint, student = toy_stages(steps=(6, steps))
    return [joint, dataclasses.replace(student, validation=validation(**kw), data=data or student.data,
                                       optimizers={"student": optax.sgd(0.3, momentum=0.9)})]


def run(workdir, stages, options=OPTIONS):
    return loop.run_stages(stages, workdir=str(workdir), options=options, mesh=devices.make_mesh())


def history(workdir):
    with open(workdir / "checkpoints" / "student" / "validation.json") as f:
        return json.load(f)


def score(store_or_variables, mesh=None):
    """The validation mse of some student variables, computed outside the loop."""
    predictor = Predictor(student_predict, store_or_variables, mesh or devices.make_mesh(), 16)
    return evaluate_model(validation(), predictor, VAL)["mse"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted: evaluated every 2 steps, the best of 6 evaluations kept, no early stop."""
    workdir = tmp_path_factory.mktemp("validated")
    return workdir, run(workdir, validated_stages())


def test_validation_is_logged_and_the_best_checkpoint_is_kept_besides_the_last(reference):
    workdir, store = reference
    metrics = writers.read_metrics(str(workdir))["student"]
    assert [s for s in sorted(metrics) if "val/mse" in metrics[s]] == [2, 4, 6, 8, 10, 12]
    assert all("loss" in metrics[s] for s in metrics)  # validation joins the training row of its step
    values = {e["step"]: e["metrics"]["mse"] for e in history(workdir)}
    assert values == {s: metrics[s]["val/mse"] for s in values}
    best_step = min(values, key=values.get)
    assert best_step != 12, "the toy must pick an earlier checkpoint, or 'best' and 'last' cannot be told apart"
    assert checkpoints.read_best(str(workdir / "checkpoints" / "student")) == {
        "step": best_step, "metric": "mse", "value": values[best_step]}
    # the stage's result is its best model; 'last' is the final step's; their scores are the logged ones
    best, last = store.load("student")["student"], store.load("student", which="last")["student"]
    assert score(best) == pytest.approx(values[best_step], rel=1e-6)
    assert score(last) == pytest.approx(values[12], rel=1e-6)
    jax.tree.map(np.testing.assert_array_equal, store.load("student", which="best")["student"], best)
    done = store.summary("student")
    assert done["best"] == {"step": best_step, "metric": "mse", "value": values[best_step]}
    assert done["evaluations"] == 6 and done["stopped_early_at"] is None
    with pytest.raises(FileNotFoundError, match="keeps no best checkpoint"):
        store.load("joint", which="best")
    # the same choice through the finished-workdir API (export, predict, evaluate)
    exported = checkpoints.load_exported(str(workdir), "student", ["student"])["student"]
    assert score(exported) == pytest.approx(values[best_step], rel=1e-6)


def test_early_stopping_ends_the_stage_and_a_rerun_skips_it(tmp_path):
    # min_delta this large: only the first evaluation (step 2) counts as an improvement; 2 more -> stop at 6
    store = run(tmp_path, validated_stages(patience=2, min_delta=1e9))
    done = store.summary("student")
    assert done["stopped_early_at"] == 6 and done["best"]["step"] == 2
    assert sorted(writers.read_metrics(str(tmp_path))["student"]) == list(range(1, 7))
    assert checkpoints.StageCheckpoints(store.checkpoint_dir("student"), save_every_steps=1, keep=2).all_steps()[-1] == 6
    before = starts(tmp_path)
    run(tmp_path, validated_stages(patience=2, min_delta=1e9))
    assert starts(tmp_path) == before  # finished: nothing retrained


def test_a_resume_redoes_the_evaluations_after_its_checkpoint(reference, tmp_path):
    """Interrupted after the evaluation at step 8 with the newest checkpoint at step 6: the resumed run
    drops that evaluation, redoes it, and ends with the reference's history, best checkpoint and log."""
    ref_dir, ref_store = reference
    data = InterruptingBatches(at_step=8)  # steps 1-8 trained, checkpoints at 3 and 6
    with pytest.raises(Interrupt):
        run(tmp_path, validated_stages(data=data))
    assert [e["step"] for e in history(tmp_path)] == [2, 4, 6, 8]
    store = run(tmp_path, validated_stages(data=data))
    assert starts(tmp_path)[-1] == ("student", 6)
    assert history(tmp_path) == history(ref_dir)
    assert checkpoints.read_best(str(tmp_path / "checkpoints" / "student")) == \
        checkpoints.read_best(str(ref_dir / "checkpoints" / "student"))
    ours, theirs = store.load("student")["student"], ref_store.load("student")["student"]
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    val = lambda w: {s: m["val/mse"] for s, m in writers.read_metrics(str(w))["student"].items() if "val/mse" in m}
    assert val(tmp_path) == val(ref_dir)


def test_a_validation_that_names_an_untrained_model_or_a_missing_metric_is_refused(tmp_path):
    joint, student = toy_stages()
    with pytest.raises(ValueError, match="validation model 'teacher' is not trained here"):
        dataclasses.replace(student, validation=validation(model="teacher"))
    with pytest.raises(ValueError, match="early stopping .* needs a `select` metric"):
        validation(select="", patience=2)
    with pytest.raises(KeyError, match="select metric 'accuracy' is not among its metrics"):
        run(tmp_path, validated_stages(select="accuracy"))


# --- derived stages ------------------------------------------------------------------------------
def two_students_and_a_choice():
    """Two students trained differently, then a derived stage keeping the better by validation mse,
    then one composing the joint stage's encoder and decoder into a single exported model."""
    joint, student = toy_stages(steps=(6, 6))
    weak = dataclasses.replace(student, name="weak", optimizers={"student": optax.sgd(1e-4)})
    strong = dataclasses.replace(student, name="strong", optimizers={"student": optax.sgd(0.3, momentum=0.9)})

    def compose(load, mesh):
        parts = load("joint")
        return {"pipeline": {"params": {k: v["params"] for k, v in parts.items()},
                             "batch_stats": {"enc": parts["enc"]["batch_stats"]}}}, {"parts": sorted(parts)}

    return [joint, weak, strong,
            select_better("choose", [("strong", "student"), ("weak", "student")], validation()),
            Stage(name="pipeline", derive=compose)]


def test_a_derived_stage_keeps_the_better_model_and_records_why(tmp_path):
    store = run(tmp_path, two_students_and_a_choice())
    scores = {s: score(store.load(s, which="last")["student"]) for s in ("weak", "strong")}
    winner = min(scores, key=scores.get)
    assert winner == "weak", "the winner must not be the first candidate, or keeping the first would pass"
    decision = store.summary("choose")["decision"]
    assert decision["chosen"] == f"{winner}/student" and decision["metric"] == "mse"
    assert decision["values"] == pytest.approx({f"{s}/student": v for s, v in scores.items()}, rel=1e-6)
    jax.tree.map(np.testing.assert_array_equal, store.load("choose")["student"], store.load(winner)["student"])
    pipeline = store.load("pipeline")["pipeline"]
    jax.tree.map(np.testing.assert_array_equal, pipeline["params"]["enc"], store.load("joint")["enc"]["params"])
    assert store.summary("pipeline")["decision"] == {"parts": ["dec", "enc"]}
    before = starts(tmp_path)
    run(tmp_path, two_students_and_a_choice())  # finished derived stages are skipped like any other
    assert starts(tmp_path) == before


def test_a_derived_stage_takes_no_training_fields():
    with pytest.raises(ValueError, match="a derived stage trains nothing; drop num_steps"):
        Stage(name="d", derive=lambda load, mesh: ({}, {}), num_steps=3)
    with pytest.raises(ValueError, match="a training stage needs step, data"):
        Stage(name="t", init=lambda rng, load: {}, optimizers={"m": optax.sgd(0.1)}, num_steps=3)


def test_the_driver_records_selections_in_results_json(tmp_path):
    config = ml_collections.ConfigDict(dict(seed=0, train=dict(checkpoint_every_steps=3, keep_checkpoints=2,
                                                               log_every_seconds=60.0)))
    recipe = types.SimpleNamespace(
        validate_config=lambda c: None, load_data=lambda c: None,
        make_stages=lambda c, data: two_students_and_a_choice(),
        evaluate=lambda c, store, data, mesh, out: driver.Report(title="toy", columns=["x"], rows=[{"x": 1}]))
    results = driver.train_and_evaluate(recipe, config, str(tmp_path))
    with open(tmp_path / "results.json") as f:
        saved = json.load(f)
    assert saved["stages"]["choose"]["decision"]["chosen"] == results["stages"]["choose"]["decision"]["chosen"]
    assert set(saved["stages"]) == {"choose", "pipeline"}


def test_candidates_of_different_architectures_each_use_their_own_predict(tmp_path):
    """A student (Decoder on a fixed projection) against the composed encoder+decoder pipeline: each is
    scored with its own predict function, and the better by validation mse is kept."""
    from tests.toy_recipe import Encoder

    def pipeline_predict(variables, batch):
        p, stats = variables["params"], variables["batch_stats"]
        h = Encoder().apply({"params": p["enc"], "batch_stats": stats["enc"]}, batch["x"], train=False)
        return {"pred": Decoder().apply({"params": p["dec"]}, h)}

    stages = two_students_and_a_choice() + [select_better(
        "choose_any", [("weak", "student"), ("pipeline", "pipeline", pipeline_predict)], validation(), export_as="best")]
    store = run(tmp_path, stages)
    mesh = devices.make_mesh()
    expected = {"weak/student": score(store.load("weak")["student"]),
                "pipeline/pipeline": evaluate_model(validation(), Predictor(pipeline_predict, store.load(
                    "pipeline")["pipeline"], mesh, 16), VAL)["mse"]}
    decision = store.summary("choose_any")["decision"]
    assert decision["values"] == pytest.approx(expected, rel=1e-6)
    assert expected["pipeline/pipeline"] != expected["weak/student"]
    assert decision["chosen"] == min(expected, key=expected.get)
    assert set(store.load("choose_any")) == {"best"}
