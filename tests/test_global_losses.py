"""Losses with a data-dependent normaliser give the same value and gradient on 8 devices as on one.

Each loss runs as a training step does: mapped over the 8 simulated devices with `devices.compile_step`'s
machinery (shard_map, per-device slice, `value_and_mean_grad`), versus the single-device formula on the
whole batch. The batches put very different object / label counts on different devices (some none),
which is where a per-device normaliser goes wrong.
"""


import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxface.losses import centernet_loss, global_ratio, head_distillation_loss, pairwise_margin_loss, soft_dice_loss
from jaxface.losses.attributes import multi_head_attribute_loss
from jaxface.losses.reduction import gather_global
from jaxface.train import devices
from jaxface.train.state import TrainState

N_DEVICES = 8


def _mapped_value_and_grad(loss_of_scale, batch):
    """(device-mean loss, device-mean gradient) of loss_of_scale(scale, local batch, axis_name) with
    respect to a replicated scalar parameter, exactly as a step function computes them."""
    mesh = devices.make_mesh(jax.devices()[:N_DEVICES])

    def per_device(scale, local):
        (loss, _), grad = devices.value_and_mean_grad(
            lambda s: (loss_of_scale(s, local, devices.AXIS), None), scale)
        return jax.lax.pmean(loss, devices.AXIS), grad

    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(devices.AXIS)), out_specs=(P(), P()),
                           check_vma=False)
    return jax.jit(mapped)(jnp.float32(1.3), batch)


def _single_value_and_grad(loss_of_scale, batch):
    return jax.jit(jax.value_and_grad(lambda s: loss_of_scale(s, batch, None)))(jnp.float32(1.3))


def _assert_same_on_one_and_eight_devices(loss_of_scale, batch):
    one = _single_value_and_grad(loss_of_scale, batch)
    eight = _mapped_value_and_grad(loss_of_scale, batch)
    np.testing.assert_allclose(np.asarray(eight), np.asarray(one), rtol=2e-6)
    return one


def _detection_batch(rng, objects_per_image):
    """CenterNet heads and targets for B = len(objects_per_image) images of 4x4 cells, 2 classes."""
    b = len(objects_per_image)
    heatmap = np.zeros((b, 4, 4, 2), np.float32)  # background everywhere but the object centres
    mask = np.zeros((b, 4, 4), np.float32)
    for i, k in enumerate(objects_per_image):
        cells = rng.choice(16, size=k, replace=False)
        mask[i].flat[cells] = 1.0
        heatmap[i].reshape(16, 2)[cells, rng.integers(0, 2, size=k)] = 1.0
    return {
        "logits": rng.normal(size=(b, 4, 4, 2)).astype(np.float32),
        "wh": rng.normal(size=(b, 4, 4, 2)).astype(np.float32),
        "offset": rng.normal(size=(b, 4, 4, 2)).astype(np.float32),
        "teacher_logits": rng.normal(size=(b, 4, 4, 2)).astype(np.float32),
        "target_heatmap": heatmap, "target_wh": rng.uniform(0, 3, size=(b, 4, 4, 2)).astype(np.float32),
        "target_offset": rng.uniform(0, 1, size=(b, 4, 4, 2)).astype(np.float32), "mask": mask,
    }


# 2 images per device; the devices hold 0, 1, 6, 2, 0, 5, 1 and 3 objects
OBJECTS = (0, 0, 1, 0, 3, 3, 2, 0, 0, 0, 4, 1, 1, 0, 2, 1)


def _centernet(scale, b, axis_name):
    heads = {"heatmap": b["logits"] * scale, "wh": b["wh"] * scale, "offset": b["offset"] * scale}
    targets = {"heatmap": b["target_heatmap"], "wh": b["target_wh"], "offset": b["target_offset"], "mask": b["mask"]}
    return centernet_loss(heads, targets, axis_name=axis_name)[0]


def _head_distillation(scale, b, axis_name):
    student = {"heatmap": b["logits"] * scale, "wh": b["wh"] * scale, "offset": b["offset"] * scale}
    teacher = {"heatmap": b["teacher_logits"], "wh": b["target_wh"], "offset": b["target_offset"]}
    return head_distillation_loss(student, teacher, b["mask"], axis_name=axis_name)[0]


@pytest.mark.parametrize("loss", [_centernet, _head_distillation], ids=["centernet", "head_distillation"])
def test_detection_losses_count_objects_over_the_global_batch(loss):
    batch = _detection_batch(np.random.default_rng(0), OBJECTS)
    _assert_same_on_one_and_eight_devices(loss, batch)
    # the per-device normaliser (each device dividing by its own count) is a different objective
    per_device = _mapped_value_and_grad(lambda s, b, axis: loss(s, b, None), batch)
    assert abs(float(per_device[0]) - float(_single_value_and_grad(loss, batch)[0])) > 1e-2


def test_attribute_loss_counts_labels_over_the_global_batch():
    rng = np.random.default_rng(1)
    b = 16
    labelled = np.zeros(b, np.float32)
    labelled[[2, 3, 4, 5, 6, 12]] = 1.0  # devices hold 0, 2, 2, 1, 0, 0, 1, 0 labelled examples
    batch = {"logits": rng.normal(size=(b, 3)).astype(np.float32), "class": rng.integers(0, 3, b).astype(np.int32),
             "age_pred": rng.normal(size=(b,)).astype(np.float32) * 10, "age": rng.uniform(0, 60, b).astype(np.float32),
             "mask_class": labelled, "mask_age": 1.0 - labelled}

    def loss(scale, b, axis_name):
        return multi_head_attribute_loss(
            {"cls": b["logits"] * scale, "age": b["age_pred"] * scale}, {"cls": b["class"], "age": b["age"]},
            {"cls": b["mask_class"], "age": b["mask_age"]}, {"cls": 1.0, "age": 0.5},
            regression_scales={"age": 10.0}, axis_name=axis_name)[0]

    _assert_same_on_one_and_eight_devices(loss, batch)


def test_global_ratio_is_the_single_device_formula_without_an_axis():
    assert float(global_ratio(jnp.float32(6.0), jnp.float32(0.0), floor=1.0)) == 6.0
    assert float(global_ratio(jnp.float32(6.0), jnp.float32(4.0), floor=1.0)) == 1.5
    assert float(global_ratio(jnp.float32(6.0), jnp.float32(2.0), epsilon=1.0)) == 2.0
    # on 8 devices: Σ numerators / max(Σ counts, floor), whatever each device holds
    numerators, counts = np.arange(8, dtype=np.float32), np.array([0, 0, 3, 0, 1, 0, 0, 0], np.float32)
    mapped = jax.shard_map(
        lambda a, c: jax.lax.pmean(global_ratio(a[0], c[0], axis_name=devices.AXIS, floor=1.0), devices.AXIS),
        mesh=devices.make_mesh(jax.devices()[:N_DEVICES]), in_specs=(P(devices.AXIS), P(devices.AXIS)),
        out_specs=P(), check_vma=False)
    np.testing.assert_allclose(float(jax.jit(mapped)(numerators, counts)), numerators.sum() / 4.0, rtol=1e-6)


def test_pairwise_margin_loss_runs_over_all_pairs_of_the_global_batch():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(16, 4)).astype(np.float32) * 0.4
    batch = {"e": embeddings, "id": np.repeat(np.arange(4), 4).astype(np.int32)}  # 4 identities x 4 images

    def loss(scale, b, axis_name):
        return pairwise_margin_loss(b["e"] * scale, b["id"], 1.0, axis_name=axis_name)

    _assert_same_on_one_and_eight_devices(loss, batch)
    # without the gather each device sees only its own pairs: a different objective
    per_device = _mapped_value_and_grad(lambda s, b, axis: loss(s, b, None), batch)
    assert abs(float(per_device[0]) - float(_single_value_and_grad(loss, batch)[0])) > 1e-2


@pytest.mark.parametrize("n_devices", [1, 2])
def test_a_step_on_one_device_compiles_without_collectives(n_devices):
    # over an axis of one device every collective is the identity, yet XLA keeps a one-participant
    # all-reduce and it blocks fusion (BENCHMARKS.md: it cost mutual's core step ~20 % on one CPU device);
    # the same step on 2 devices must keep them all, or the global batch would be lost
    def step(state, frozen, batch, rng):
        def loss_fn(w):
            x = batch["x"] * w  # [B, H, W]
            probs = jax.nn.softmax(jnp.stack([x, -x], -1))
            return (global_ratio(jnp.sum(x), jnp.sum(batch["x"] > 0), axis_name=devices.AXIS, floor=1.0)
                    + soft_dice_loss(probs, batch["x"] > 0, batch["x"] != 0, axis_name=devices.AXIS)
                    + jnp.sum(gather_global(x, devices.AXIS) ** 2)), None

        (loss, _), grads = devices.value_and_mean_grad(loss_fn, state.params["m"])
        return state.apply_gradients({"m": grads}), {"loss": loss}

    mesh = devices.make_mesh(jax.devices()[:n_devices])
    state = devices.replicate(TrainState.create(variables={"m": {"params": jnp.float32(1.0)}},
                                                tx={"m": optax.sgd(0.1)}, rng=jax.random.key(0)), mesh)
    batch = devices.shard_batch({"x": np.linspace(-1, 1, 2 * 4 * 4).reshape(2, 4, 4).astype(np.float32)}, mesh)
    compiled = devices.compile_step(step, mesh).lower(state, {}, batch, devices.stop_flags(mesh)[False]).compile()
    collectives = re.findall(r"\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?:-start)?\(",
                             compiled.as_text())
    if n_devices == 1:
        assert collectives == []
    else:  # the loss's counts and Dice sums, the gather, the gradient, metric and stop-flag means
        assert {"all-reduce", "all-gather"} <= set(collectives)
