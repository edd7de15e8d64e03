"""The shared optimizer builder: schedules, options, the checks on its section, and the logged rate."""

import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxface.train import loop, optimizers, writers
from tests.toy_recipe import toy_stages


def rates(optimizer_config, num_steps):
    """The learning rate of every update of a stage, read from the optimizer state as the core does."""
    tx = optimizers.make_optimizer(optimizer_config, num_steps)
    params = {"w": jnp.ones(3)}
    state, out = tx.init(params), []
    for _ in range(num_steps):
        _, state = tx.update({"w": jnp.ones(3)}, state, params)
        out.append(float(state.hyperparams["learning_rate"]))
    return np.array(out)


def test_cosine_warms_up_from_zero_then_decays_to_zero_at_the_last_step():
    lr = rates(optimizers.default_config(learning_rate=0.1, warmup_steps=4), 12)
    np.testing.assert_allclose(lr[:5], [0.0, 0.025, 0.05, 0.075, 0.1], rtol=1e-6)  # linear warmup
    assert np.all(np.diff(lr[4:]) < 0)  # then strictly decreasing
    # cosine over the 8 steps after the warmup: lr(s) = 0.1 * (1 + cos(pi * (s - 4) / 8)) / 2
    np.testing.assert_allclose(lr[4:], 0.05 * (1 + np.cos(np.pi * np.arange(8) / 8)), rtol=1e-5)


def test_constant_schedule_and_no_warmup():
    np.testing.assert_allclose(rates(optimizers.default_config(learning_rate=0.1, schedule="constant"), 5), 0.1)
    lr = rates(optimizers.default_config(learning_rate=0.1, schedule="constant", warmup_steps=2), 5)
    np.testing.assert_allclose(lr, [0.0, 0.05, 0.1, 0.1, 0.1], rtol=1e-6)


@pytest.mark.parametrize("name, extra", [("adamw", {}), ("adam", {"weight_decay": 0.0}), ("sgd", {})])
def test_every_optimizer_matches_its_optax_counterpart(name, extra):
    config = optimizers.default_config(**{"name": name, "learning_rate": 0.1, "schedule": "constant",
                                          "weight_decay": 0.01, **extra})
    reference = {"adamw": optax.adamw(0.1, weight_decay=0.01), "adam": optax.adam(0.1),
                 "sgd": optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1, momentum=0.9))}[name]
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    ours, theirs = optimizers.make_optimizer(config, 3), reference
    s1, s2 = ours.init(params), theirs.init(params)
    for _ in range(3):
        u1, s1 = ours.update(grads, s1, params)
        u2, s2 = theirs.update(grads, s2, params)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_gradient_clipping_bounds_the_update():
    config = optimizers.default_config(name="sgd", learning_rate=1.0, schedule="constant", weight_decay=0.0,
                                       momentum=0.0, grad_clip_norm=1.0)
    tx = optimizers.make_optimizer(config, 2)
    params = {"w": jnp.zeros(2)}
    update, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(params), params)
    np.testing.assert_allclose(update["w"], [-0.6, -0.8], rtol=1e-6)  # the gradient rescaled to norm 1


@pytest.mark.parametrize("key, value, message", [
    ("name", "lamb", "config.optimizer.name='lamb'; allowed: adamw, adam, sgd"),
    ("schedule", "step", "config.optimizer.schedule='step'; allowed: cosine, constant"),
    ("learning_rate", 0.0, "config.optimizer.learning_rate=0.0 must be a finite number > 0"),
    ("learning_rate", float("inf"), "config.optimizer.learning_rate=inf must be a finite number > 0"),
    ("weight_decay", -1e-4, "config.optimizer.weight_decay=-0.0001 must be a finite number >= 0"),
    ("grad_clip_norm", float("nan"), "config.optimizer.grad_clip_norm=nan must be a finite number >= 0"),
    ("momentum", 1.0, "config.optimizer.momentum=1.0 must be < 1"),
    ("warmup_steps", 2.5, "config.optimizer.warmup_steps=2.5 must be a whole number"),
    ("warmup_steps", 5, "config.train.steps.b=5 must be more than config.optimizer.warmup_steps=5 "
                        "(warmup, then at least one step of the schedule)"),
])
def test_bad_optimizer_section_is_refused_with_one_line(key, value, message):
    config = optimizers.default_config(**{key: value})
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizers.validate(config, {"a": 10, "b": 5})


def test_a_network_trains_with_its_own_values_over_the_shared_section():
    config = optimizers.default_config(learning_rate=0.1, schedule="constant",
                                       per_model={"teacher": {"learning_rate": 0.02}})
    np.testing.assert_allclose(rates(config, 3), 0.1)  # no network named: the shared section
    tx = optimizers.make_optimizer(config, 3, "teacher")
    params = {"w": jnp.ones(3)}
    _, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.02)
    assert optimizers.for_model(config, "student") is config  # no entry: everything shared
    optimizers.validate(optimizers.default_config(per_model={"teacher": {}}), {"a": 3}, models=("teacher",))
    assert dict(optimizers.for_model(config, "teacher")) == {**{k: config[k] for k in optimizers.KEYS},
                                                             "learning_rate": 0.02}


@pytest.mark.parametrize("per_model, message", [
    ({"techer": {"learning_rate": 0.1}}, "config.optimizer.per_model.techer: no such network with its own "
                                         "optimizer; allowed: student, teacher"),
    ({"teacher": {"lr": 0.1}}, "config.optimizer.per_model.teacher.lr: unknown; allowed: "
                               + ", ".join(optimizers.KEYS)),
    ({"teacher": {"learning_rate": -1.0}}, "config.optimizer.per_model.teacher.learning_rate=-1.0 must be a "
                                           "finite number > 0"),
    ({"teacher": {"warmup_steps": 10}}, "config.train.steps.a=10 must be more than "
                                        "config.optimizer.per_model.teacher.warmup_steps=10 (warmup, then at least "
                                        "one step of the schedule)"),
    ({"teacher": 0.1}, "config.optimizer.per_model must map network names to {key: value} overrides, "
                       "e.g. {'teacher': {'learning_rate': 0.003}}"),
])
def test_bad_per_network_values_are_refused_with_one_line_naming_the_network(per_model, message):
    config = optimizers.default_config(per_model=per_model)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizers.validate(config, {"a": 10}, models=("student", "teacher"))


def test_a_recipe_without_per_network_optimizers_refuses_the_entry():
    config = optimizers.default_config(per_model={"teacher": {"learning_rate": 0.1}})
    with pytest.raises(ValueError, match="^config.optimizer.per_model.teacher: no such network with its own "
                                         "optimizer; allowed: none in this recipe$"):
        optimizers.validate(config, {"a": 10})


def test_adam_refuses_weight_decay_it_would_ignore():
    with pytest.raises(ValueError, match="does not apply to 'adam'; use name='adamw'"):
        optimizers.validate(optimizers.default_config(name="adam", weight_decay=1e-4), {"a": 3})


def test_the_core_logs_the_learning_rate_each_step_used(tmp_path):
    """One entry per optimizer object: the toy's joint stage has two (SGD + Adam), so two keys."""
    import dataclasses

    config = optimizers.default_config(learning_rate=0.1, warmup_steps=2)
    tx = optimizers.make_optimizer(config, 6)
    joint, student = toy_stages(steps=(6, 6))
    stages = [dataclasses.replace(joint, optimizers={"enc": tx, "dec": optimizers.make_optimizer(config, 6)}),
              dataclasses.replace(student, optimizers={"student": tx})]
    loop.run_stages(stages, workdir=str(tmp_path), options=loop.LoopOptions(checkpoint_every_steps=100))
    metrics = writers.read_metrics(str(tmp_path))
    expected = np.array(optimizers.learning_rate_schedule(config, 6)(np.arange(6)))
    logged = [metrics["student"][s]["learning_rate"] for s in range(1, 7)]
    np.testing.assert_allclose(logged, expected, rtol=1e-6)
    assert {"learning_rate/dec", "learning_rate/enc"} <= set(metrics["joint"][1])
    np.testing.assert_allclose([metrics["joint"][s]["learning_rate/enc"] for s in range(1, 7)], expected, rtol=1e-6)
