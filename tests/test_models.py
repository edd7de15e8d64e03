"""Tests for the CenterNet detector family and the feature adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.distill import STUDENT, TEACHER_BIG, TEACHER_HR  # the sizes the distill recipe trains
from jaxface.models import HEATMAP_BIAS_INIT, CenterNet, FeatureAdapter, param_count

NUM_CLASSES = 3
# Behavioural tests run a tiny network on 16x16 images (compiling the presets would dominate the run time);
# the presets themselves are checked through jax.eval_shape, which compiles nothing.
TINY = dict(widths=(4, 8), stem_stride=2, blocks_per_level=1, head_width=4)
TINY_SIZE = 16


def _images(batch, size=TINY_SIZE, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, size, size, 3), 0, 256).astype(jnp.uint8)


def _init(model, images):
    # XLA's RngBitGenerator key compiles in a fraction of threefry's time on CPU (threefry init took ~20 s here).
    return jax.jit(lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False))(images)


TINY_MODEL = CenterNet(num_classes=NUM_CLASSES, **TINY)
TINY_BF16 = CenterNet(num_classes=NUM_CLASSES, dtype=jnp.bfloat16, **TINY)
TINY_SYNCED = CenterNet(num_classes=NUM_CLASSES, bn_axis_name="data", **TINY)
# Jitted once at module level so tests that share an input shape share a compilation.
_eval = jax.jit(lambda v, x: TINY_MODEL.apply(v, x, train=False))
_train = jax.jit(lambda v, x: TINY_MODEL.apply(v, x, train=True, mutable=["batch_stats"]))


@pytest.fixture(scope="module")
def tiny_variables():
    """Initialised variables of TINY_MODEL, shared by the behavioural tests."""
    return _init(TINY_MODEL, _images(1))


def _abstract_variables(model, size):
    """Variable shapes without allocating or running anything (keeps the tests fast)."""
    return jax.eval_shape(lambda: _init(model, jnp.zeros((1, size, size, 3), jnp.uint8)))


def _output_shapes(model, size, batch=2):
    variables = _abstract_variables(model, size)
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
    return jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)


@pytest.mark.parametrize(
    "preset, size, widths",
    [(STUDENT, 64, STUDENT["widths"]), (TEACHER_BIG, 64, TEACHER_BIG["widths"]), (TEACHER_HR, 128, TEACHER_HR["widths"])],
    ids=["student", "teacher_big", "teacher_hr"],
)
def test_preset_output_shapes(preset, size, widths):
    out = _output_shapes(CenterNet(num_classes=NUM_CLASSES, **preset), size)
    # Student/big teacher on 64x64 (stem 2) and HR teacher on 128x128 (stem 4) share the strides 4, 8, 16.
    assert [f.shape for f in out["features"]] == [(2, 16, 16, widths[0]), (2, 8, 8, widths[1]), (2, 4, 4, widths[2])]
    assert {k: v.shape for k, v in out["heads"].items()} == {
        "heatmap": (2, 16, 16, NUM_CLASSES),
        "wh": (2, 16, 16, 2),
        "offset": (2, 16, 16, 2),
    }
    assert all(f.dtype == jnp.float32 for f in out["features"])


def test_hr_teacher_feature_maps_match_student_spatially():
    student = _output_shapes(CenterNet(num_classes=1, **STUDENT), 64)
    teacher = _output_shapes(CenterNet(num_classes=1, **TEACHER_HR), 128)
    assert [f.shape[:3] for f in teacher["features"]] == [f.shape[:3] for f in student["features"]]
    assert teacher["heads"]["heatmap"].shape == student["heads"]["heatmap"].shape


def test_output_stride_and_non_square_input():
    model = CenterNet(num_classes=1, **STUDENT)
    assert model.output_stride == 4 and CenterNet(num_classes=1, **TEACHER_HR).output_stride == 8
    variables = _abstract_variables(model, 64)
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False), variables, jax.ShapeDtypeStruct((1, 32, 96, 3), jnp.uint8)
    )
    assert out["heads"]["wh"].shape == (1, 8, 24, 2)
    assert [f.shape[1:3] for f in out["features"]] == [(8, 24), (4, 12), (2, 6)]


def test_big_teacher_has_at_least_four_times_student_params():
    student = param_count(_abstract_variables(CenterNet(num_classes=NUM_CLASSES, **STUDENT), 64)["params"])
    teacher = param_count(_abstract_variables(CenterNet(num_classes=NUM_CLASSES, **TEACHER_BIG), 64)["params"])
    assert teacher >= 4 * student


def test_param_count_counts_every_scalar():
    tree = {"a": jnp.zeros((2, 3)), "b": [jnp.zeros(4), {"c": jnp.zeros((1, 1, 5))}]}
    assert param_count(tree) == 6 + 4 + 5
    assert param_count(jax.eval_shape(lambda: tree)) == 15


def test_heatmap_bias_starts_at_prior(tiny_variables):
    bias = tiny_variables["params"]["head_heatmap_out"]["bias"]
    np.testing.assert_allclose(bias, np.full(NUM_CLASSES, HEATMAP_BIAS_INIT), rtol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-HEATMAP_BIAS_INIT)), 0.1, rtol=1e-6)


def test_uint8_and_unit_float_inputs_agree(tiny_variables):
    images = _images(4)
    from_uint8 = _eval(tiny_variables, images)
    from_float = _eval(tiny_variables, images.astype(jnp.float32) / 255.0)
    for a, b in zip(jax.tree.leaves(from_uint8), jax.tree.leaves(from_float)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Sanity: the output does depend on the input (a test that could not fail would prove nothing).
    other = _eval(tiny_variables, _images(4, seed=1))
    assert not np.allclose(other["heads"]["wh"], from_uint8["heads"]["wh"])


def test_train_mode_updates_batch_stats(tiny_variables):
    _, updates = _train(tiny_variables, _images(4))
    old, new = tiny_variables["batch_stats"], updates["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))]
    assert all(changed)
    # Momentum 0.9: new running mean = 0.9 * old + 0.1 * batch mean, and the init running mean is 0.
    stem_mean = new["stem_0"]["bn"]["mean"]
    assert np.all(np.abs(stem_mean) > 0) and stem_mean.shape == (TINY["widths"][0],)


def test_batchnorm_syncs_statistics_over_named_axis(tiny_variables):
    """Two 'devices' of 2 images each with bn_axis_name='data' == one device with all 4 images."""
    images = _images(4)
    split_images = images.reshape(2, 2, TINY_SIZE, TINY_SIZE, 3)

    def train_apply(model, x):
        return model.apply(tiny_variables, x, train=True, mutable=["batch_stats"])

    full_out, full_stats = _train(tiny_variables, images)
    full_stats = full_stats["batch_stats"]
    split_out, split_stats = jax.jit(jax.vmap(lambda x: train_apply(TINY_SYNCED, x), axis_name="data"))(split_images)
    split_stats = split_stats["batch_stats"]
    for device in range(2):
        stats = jax.tree.map(lambda s: s[device], split_stats)
        for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(full_stats)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        split_out["heads"]["heatmap"].reshape(full_out["heads"]["heatmap"].shape),
        full_out["heads"]["heatmap"],
        rtol=1e-4,
        atol=1e-4,
    )
    # Without the named axis each half normalises with its own statistics, which differ from the full batch.
    unsynced_out, _ = jax.jit(jax.vmap(lambda x: train_apply(TINY_MODEL, x)))(split_images)
    assert not np.allclose(
        unsynced_out["heads"]["heatmap"].reshape(full_out["heads"]["heatmap"].shape),
        full_out["heads"]["heatmap"],
        atol=1e-4,
    )


def test_bfloat16_compute_keeps_float32_params_and_outputs(tiny_variables):
    images = _images(4)
    abstract = jax.eval_shape(lambda: TINY_BF16.init(jax.random.key(0), images, train=False))
    assert jax.tree.structure(abstract) == jax.tree.structure(tiny_variables)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract))
    low, low_updates = jax.jit(
        lambda v, x: TINY_BF16.apply(v, x, train=True, mutable=["batch_stats"])
    )(tiny_variables, images)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(low))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(low_updates))
    # Same weights in float32: bf16 keeps ~3 significant digits, so outputs agree loosely but not exactly.
    reference, _ = _train(tiny_variables, images)
    np.testing.assert_allclose(low["heads"]["wh"], reference["heads"]["wh"], atol=0.1, rtol=0.1)
    assert not np.array_equal(low["heads"]["wh"], reference["heads"]["wh"])


def test_feature_adapter_maps_student_channels_to_teacher_channels():
    features = _output_shapes(CenterNet(num_classes=1, **STUDENT), 64)["features"]
    rng = np.random.default_rng(0)
    features = tuple(jnp.asarray(rng.normal(size=f.shape), jnp.float32) for f in features)
    adapter = FeatureAdapter(channels=TEACHER_BIG["widths"])
    adapter_vars = jax.jit(lambda f: adapter.init(jax.random.key(1, impl="rbg"), f))(features)
    adapted = jax.jit(adapter.apply)(adapter_vars, features)
    assert isinstance(adapted, tuple)
    c1, c2, c3 = TEACHER_BIG["widths"]
    assert [a.shape for a in adapted] == [(2, 16, 16, c1), (2, 8, 8, c2), (2, 4, 4, c3)]
    assert all(a.dtype == jnp.float32 for a in adapted)
    assert [adapter_vars["params"][f"level{k}"]["bias"].shape for k in (1, 2, 3)] == [(c1,), (c2,), (c3,)]
    # A 1x1 conv: each output pixel is kernel^T @ input pixel + bias.
    level1 = adapter_vars["params"]["level1"]
    expected = features[0][0, 3, 5] @ level1["kernel"][0, 0] + level1["bias"]
    np.testing.assert_allclose(adapted[0][0, 3, 5], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="FeatureAdapter got 2 feature maps"):
        adapter.apply(adapter_vars, features[:2])


@pytest.mark.parametrize(
    "kwargs, shape, dtype, message",
    [
        (dict(stem_stride=3), (1, 64, 64, 3), jnp.uint8, "stem_stride must be a power of two"),
        (dict(widths=()), (1, 64, 64, 3), jnp.uint8, "widths must be a non-empty"),
        (dict(num_classes=0), (1, 64, 64, 3), jnp.uint8, "num_classes must be an int >= 1"),
        (dict(), (1, 60, 64, 3), jnp.uint8, "multiples of stem_stride"),
        (dict(), (1, 64, 64, 1), jnp.uint8, r"shape \[B, H, W, 3\]"),
        (dict(), (1, 64, 64, 3), jnp.int32, "uint8 or floating point"),
    ],
)
def test_bad_config_or_input_raises_value_error(kwargs, shape, dtype, message):
    config = dict(num_classes=1, **STUDENT)
    config.update(kwargs)
    model = CenterNet(**config)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, dtype), train=False))
