"""The training core's guarantees, on a two-model toy recipe (tests/toy_recipe.py)."""

import dataclasses
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.data.pipeline import ShuffledBatches
from jaxface.train import devices, loop, writers
from tests import toy_recipe
from tests.toy_recipe import toy_data, toy_stages

OPTIONS = loop.LoopOptions(seed=0, checkpoint_every_steps=4, keep_checkpoints=3, log_every_seconds=60)


def losses(workdir):
    return {stage: [rec["loss"] for _, rec in sorted(steps.items())]
            for stage, steps in writers.read_metrics(workdir).items()}


def run(workdir, n_devices=8, stages=None, options=OPTIONS):
    mesh = devices.make_mesh(jax.devices()[:n_devices])
    return loop.run_stages(stages or toy_stages(), workdir=str(workdir), mesh=mesh, options=options)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-device run, shared by the comparisons below."""
    workdir = tmp_path_factory.mktemp("reference")
    store = run(workdir)
    return workdir, store


class Interrupt(Exception):
    pass


class InterruptingBatches(ShuffledBatches):
    """Raises (or sends a signal) once, when the loop asks for the batch of `at_step`."""

    def __init__(self, at_step, action="raise"):
        super().__init__(toy_data(), global_batch_size=16, seed=0)
        self.at_step, self.action, self.fired = at_step, action, False

    def local_batch(self, step, process_index=0, process_count=1):
        if step == self.at_step and not self.fired:
            self.fired = True
            if self.action == "raise":
                raise Interrupt(f"stopped at {step}")
            os.kill(os.getpid(), signal.SIGTERM)
        return super().local_batch(step, process_index, process_count)


def test_two_models_train_jointly_and_teacher_stays_frozen(reference):
    workdir, store = reference
    joint = store.load("joint")
    assert set(joint) == {"enc", "dec"} and "batch_stats" in joint["enc"]
    # each model moved away from its initialisation, under its own optimizer
    init = toy_stages()[0].init(jax.random.key(0), store.load)
    for name in ("enc", "dec"):
        moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                             joint[name]["params"], init[name]["params"])
        assert max(jax.tree.leaves(moved)) > 1e-3
    # the student stage saved only its own model: frozen teachers are not re-saved
    student = store.load("student")
    assert set(student) == {"student"}
    assert len(losses(workdir)["student"]) == 6


def test_one_device_and_eight_devices_give_the_same_losses(reference, tmp_path):
    workdir, _ = reference
    run(tmp_path, n_devices=1)
    one, eight = losses(tmp_path), losses(workdir)
    for stage in ("joint", "student"):
        np.testing.assert_allclose(one[stage], eight[stage], rtol=2e-5)


def starts(workdir):
    """[(stage, step it started from)] for every stage start of every run on `workdir`."""
    return [(r["stage"], r["from_step"]) for r in writers.read_starts(str(workdir))]


def lines(workdir, stage):
    """The steps of `stage` in metrics.jsonl in file order, a resume's replayed steps included."""
    return [step for name, step in writers.read_metric_lines(str(workdir)) if name == stage]


def saved_steps(workdir, stage):
    return sorted(int(d) for d in os.listdir(workdir / "checkpoints" / stage) if d.isdigit())


def test_batch_norm_averages_over_devices_only_when_there_are_several(monkeypatch):
    # several devices: statistics of the global batch (what makes 1 and 8 devices train alike); one device:
    # no cross-device mean, whose all-reduces only slowed the step (BENCHMARKS.md, semi_distill)
    assert jax.device_count() == 8 and devices.batch_norm_axis(train=True) == devices.AXIS
    assert devices.batch_norm_axis(train=False) is None
    monkeypatch.setattr(jax, "device_count", lambda backend=None: 1)
    assert devices.batch_norm_axis(train=True) is None


def test_stop_and_resume_continues_from_the_newest_checkpoint(reference, tmp_path):
    workdir, _ = reference
    data = InterruptingBatches(at_step=7)  # a crash when step 8's batch is read: steps 1-7 are done
    with pytest.raises(Interrupt):
        run(tmp_path, stages=toy_stages(data=data))
    assert saved_steps(tmp_path, "joint") == [4] and lines(tmp_path, "joint") == list(range(1, 8))
    run(tmp_path, stages=toy_stages(data=data))
    # the rerun read the step-4 checkpoint and replayed exactly steps 5-7 before going on
    assert starts(tmp_path) == [("joint", 0), ("joint", 4), ("student", 0)]
    assert lines(tmp_path, "joint") == list(range(1, 8)) + list(range(5, 13))
    assert losses(tmp_path) == losses(workdir)  # bit-identical to the uninterrupted run


def test_a_stop_inside_a_later_stage_resumes_that_stage_only(reference, tmp_path):
    workdir, _ = reference
    data = InterruptingBatches(at_step=5)
    with pytest.raises(Interrupt):
        run(tmp_path, stages=toy_stages(student_data=data))
    assert saved_steps(tmp_path, "student") == [4] and lines(tmp_path, "student") == [1, 2, 3, 4, 5]
    run(tmp_path, stages=toy_stages(student_data=data))
    assert starts(tmp_path) == [("joint", 0), ("student", 0), ("student", 4)]  # joint is not retrained
    assert lines(tmp_path, "student") == [1, 2, 3, 4, 5, 5, 6]
    assert losses(tmp_path) == losses(workdir)


def test_a_stage_finished_in_another_run_can_be_imported(reference, tmp_path):
    workdir, _ = reference
    joint, student = toy_stages()
    store = loop.run_stages([student], workdir=str(tmp_path), mesh=devices.make_mesh(), options=OPTIONS,
                            imported={"joint": os.path.join(workdir, "checkpoints", "joint")})
    assert losses(tmp_path) == {"student": losses(workdir)["student"]}  # the same frozen teacher
    assert not os.path.exists(tmp_path / "checkpoints" / "joint")  # read in place, not copied or retrained
    with pytest.raises(ValueError, match=r"stages \['joint'\] are both trained here and imported"):
        loop.run_stages([joint, student], workdir=str(tmp_path), imported={"joint": str(tmp_path)})
    assert set(store.load("joint")) == {"enc", "dec"}


def test_finished_stages_are_skipped_on_rerun(reference):
    workdir, _ = reference
    lines = open(os.path.join(workdir, "metrics.jsonl")).read()
    run(workdir)
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == lines


def test_sigterm_checkpoints_the_current_step_and_rerun_continues(reference, tmp_path):
    workdir, _ = reference
    data = InterruptingBatches(at_step=6, action="sigterm")
    with pytest.raises(loop.Preempted) as err:
        run(tmp_path, stages=toy_stages(data=data))
    assert err.value.code == 143 and "joint" in str(err.value)
    stopped = saved_steps(tmp_path, "joint")[-1]
    assert stopped > 4  # the step in flight when the signal came, not only the periodic step 4
    assert f"at step {stopped}: checkpoint written" in str(err.value)
    assert lines(tmp_path, "joint") == list(range(1, stopped + 1))
    run(tmp_path, stages=toy_stages(data=data))
    assert starts(tmp_path) == [("joint", 0), ("joint", stopped), ("student", 0)]
    assert lines(tmp_path, "joint") == list(range(1, 13))  # nothing replayed: the stop step was saved
    assert losses(tmp_path) == losses(workdir)


def _finite_checkpoints(workdir, stage):
    """{step: whether every saved array of that checkpoint is finite}."""
    import orbax.checkpoint as ocp

    out = {}
    for step in saved_steps(workdir, stage):
        tree = ocp.PyTreeCheckpointer().restore(str(workdir / "checkpoints" / stage / str(step) / "default"))
        floats = [np.asarray(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        out[step] = all(np.isfinite(x).all() for x in floats)
    return out


@pytest.mark.parametrize("where, at, message, kept", [
    ("metric", 8, r"stage joint: metric 'loss' is nan at step 8", [4]),  # a checkpoint step
    ("metric", 12, r"stage joint: metric 'loss' is nan at step 12", [4, 8]),  # the stage's last step
    ("params", 8, r"stage joint: parameters or BatchNorm statistics are not finite at step 8", [4]),
], ids=["metric_at_checkpoint_step", "metric_at_last_step", "params_at_checkpoint_step"])
def test_nan_stops_the_run_and_nothing_poisoned_is_saved(reference, tmp_path, where, at, message, kept):
    stages = toy_stages()
    good_step = stages[0].step

    def poisoned_step(state, frozen, batch, rng):
        state, metrics = good_step(state, frozen, batch, rng)
        poison = jnp.where(state.step + 1 == at, jnp.nan, 0.0)  # state.step counts the steps before this one
        if where == "params":  # the loss of this step is finite: only the update is poisoned
            return state.replace(params=jax.tree.map(lambda p: p + poison, state.params)), metrics
        return state, {**metrics, "loss": metrics["loss"] + poison}

    stages[0] = dataclasses.replace(stages[0], step=poisoned_step)
    with pytest.raises(loop.NonFiniteLossError, match=message):
        run(tmp_path, stages=stages)
    assert _finite_checkpoints(tmp_path, "joint") == {step: True for step in kept}
    run(tmp_path)  # the rerun (poison removed) starts from the last finite checkpoint
    assert starts(tmp_path)[:2] == [("joint", 0), ("joint", kept[-1])]
    assert losses(tmp_path) == losses(reference[0])


def test_corrupted_newest_checkpoint_falls_back_to_previous(reference, tmp_path, caplog):
    workdir, _ = reference
    data = InterruptingBatches(at_step=10)
    with pytest.raises(Interrupt):
        run(tmp_path, stages=toy_stages(data=data))
    ckpt_dir = tmp_path / "checkpoints" / "joint"
    assert saved_steps(tmp_path, "joint") == [4, 8]
    for root, _, files in os.walk(ckpt_dir / "8"):
        for f in files:  # truncate every file of the newest checkpoint
            open(os.path.join(root, f), "wb").close()
    with caplog.at_level("WARNING"):
        run(tmp_path, stages=toy_stages(data=data))
    assert any("joint/8 is unreadable" in r.getMessage() and "falling back to the previous one" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert starts(tmp_path)[1] == ("joint", 4)  # step 4, neither the corrupted 8 nor a fresh start
    assert lines(tmp_path, "joint") == list(range(1, 11)) + list(range(5, 13))
    assert losses(tmp_path) == losses(workdir)


def test_a_second_run_on_a_busy_workdir_is_refused(tmp_path):
    with loop.WorkdirLock(str(tmp_path)):
        with pytest.raises(loop.WorkdirBusyError, match=r"is in use by pid \d+"):
            with loop.WorkdirLock(str(tmp_path)):
                pass
    with loop.WorkdirLock(str(tmp_path)):  # released: usable again
        pass


def test_a_rerun_that_changes_a_started_stage_is_refused(tmp_path):
    def stages(lr, data=None):
        joint, student = toy_stages(data=data)
        return [dataclasses.replace(joint, fingerprint={"train.learning_rate": lr, "seed": 0}),
                dataclasses.replace(student, fingerprint={"train.learning_rate": lr, "seed": 0, "steps": 6})]

    data = InterruptingBatches(at_step=5)
    with pytest.raises(Interrupt):  # 'joint' started (checkpoint at step 4), not finished
        loop.run_stages(stages(0.1, data), workdir=str(tmp_path), options=OPTIONS, config_json='{"lr": 0.1}')
    record = (tmp_path / "config.json").read_text()
    for lr in (0.5, "0.1"):  # a changed value, and a changed type
        with pytest.raises(loop.ConfigChangedError, match=r"^stage joint in .* was trained with another config: "
                                                          r"train.learning_rate: 0.1 -> .*; rerun with the original "
                                                          r"config, or choose a new --workdir"):
            loop.run_stages(stages(lr), workdir=str(tmp_path), options=OPTIONS, config_json='{"lr": 0.5}')
    assert (tmp_path / "config.json").read_text() == record  # the workdir's record still matches its models
    assert starts(tmp_path) == [("joint", 0)]  # nothing trained by the refused runs
    loop.run_stages(stages(0.1), workdir=str(tmp_path), options=OPTIONS)  # the original config resumes
    assert starts(tmp_path) == [("joint", 0), ("joint", 4), ("student", 0)]
    with pytest.raises(loop.ConfigChangedError, match=r"stage joint .*train.learning_rate: 0.1 -> 0.2"):
        loop.run_stages(stages(0.2), workdir=str(tmp_path), options=OPTIONS)  # and a finished stage too


def test_the_shared_train_section_check_names_the_key():
    import ml_collections

    from jaxface.train import optimizers

    train = dict(batch_size=16, checkpoint_every_steps=4, keep_checkpoints=2, log_every_seconds=10.0,
                 steps=dict(a=3, b=2))
    good = dict(train=train, optimizer=optimizers.default_config(warmup_steps=1).to_dict())
    loop.validate_train_config(ml_collections.ConfigDict(good), ("a", "b"))
    for section, key, value, message in [
        ("train", "batch_size", True, "config.train.batch_size=True must be a finite number > 0"),
        ("train", "log_every_seconds", float("inf"), "config.train.log_every_seconds=inf must be a finite number > 0"),
        ("train", "steps", dict(a=3, b=0), "config.train.steps.b=0 must be a finite number > 0"),
        ("train", "steps", dict(a=3, b=2, c=1), "config.train.steps.c: unknown; allowed: a, b"),
        ("train", "steps", dict(a=3, b=1), "config.train.steps.b=1 must be more than config.optimizer.warmup_steps=1 "
                                           "(warmup, then at least one step of the schedule)"),
        ("optimizer", "learning_rate", float("nan"), "config.optimizer.learning_rate=nan must be a finite number > 0"),
    ]:
        config = ml_collections.ConfigDict({**good, section: {**good[section], key: value}})
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            loop.validate_train_config(config, ("a", "b"))



def test_a_step_that_updates_two_models_in_turn_counts_as_one_step(reference, tmp_path):
    """The decoder is updated on the encoder's NEW output (two updates in one step); checkpoints and the
    resume still count steps, not updates."""
    def two_updates(state, frozen, batch, rng):
        state, _ = toy_recipe.joint_step(state, frozen, batch, rng)  # updates both models
        grads = jax.tree.map(jnp.zeros_like, {"dec": state.params["dec"]})
        return state.apply_gradients(grads), {"loss": jnp.float32(0.0)}  # a second update, of one model

    data = InterruptingBatches(at_step=7)
    stages = [dataclasses.replace(toy_stages(data=data)[0], step=two_updates)]
    with pytest.raises(Interrupt):
        run(tmp_path, stages=stages)
    assert saved_steps(tmp_path, "joint") == [4]
    run(tmp_path, stages=stages)
    assert saved_steps(tmp_path, "joint")[-1] == 12 and starts(tmp_path) == [("joint", 0), ("joint", 4)]
    assert lines(tmp_path, "joint") == list(range(1, 8)) + list(range(5, 13))


def test_a_round_on_labels_predicted_by_an_earlier_stage_resumes_with_the_same_labels(tmp_path):
    """Rounds (pseudo-labels): a stage whose data is a function of an earlier stage's exported models,
    interrupted mid-round and resumed, derives the same labels and finishes like an uninterrupted run."""
    from jaxface.data.pipeline import ArraySource

    derived = []

    class Once(ShuffledBatches):
        fired = False

        def local_batch(self, step, process_index=0, process_count=1):
            if step == 7 and self.interrupt and not Once.fired:
                Once.fired = True
                raise Interrupt("mid-round")
            return super().local_batch(step, process_index, process_count)

    def stages(interrupt):
        def pseudo_labelled(load):  # the round's labels: the joint stage's predictions
            joint = load("joint")
            x = toy_data().arrays["x"]
            h = toy_recipe.Encoder().apply(joint["enc"], x, train=False)
            y = np.asarray(toy_recipe.Decoder().apply(joint["dec"], h))
            derived.append(y)
            source = Once(ArraySource({"x": x, "y": y}), global_batch_size=16, seed=0)
            source.interrupt = interrupt
            return source

        joint = toy_stages()[0]
        return [joint, dataclasses.replace(joint, name="round1", data=pseudo_labelled)]

    run(tmp_path / "reference", stages=stages(interrupt=False))
    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", stages=stages(interrupt=True))
    run(tmp_path / "resumed", stages=stages(interrupt=True))
    assert len(derived) == 3 and all(np.array_equal(y, derived[0]) for y in derived)
    assert starts(tmp_path / "resumed") == [("joint", 0), ("round1", 0), ("round1", 4)]
    assert lines(tmp_path / "resumed", "round1") == list(range(1, 8)) + list(range(5, 13))
    assert losses(tmp_path / "resumed") == losses(tmp_path / "reference")
