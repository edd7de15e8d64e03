"""Multi-task attribute loss (against hand-computed values, masking and gradients) and the multi-task
attribute network (shapes, stage-to-stage parameter carry-over, decoupling)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.losses.attributes import multi_head_attribute_loss
from jaxface.models.attributes import MultiTaskAttributeNet, ResNetBackbone, TaskDecoupler, merge_params

# ------------------------------------------------------------------------------------------------
# Loss.


def _huber(x, delta=1.0):
    return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)


def _cross_entropy(logits, label):
    return math.log(sum(math.exp(z) for z in logits)) - logits[label]


def _batch():
    outputs = {
        'smile': jnp.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]]),
        'age': jnp.array([30.0, 52.0, 20.0]),
        'pose': jnp.array([[10.0, 0.0, -5.0], [0.0, 40.0, 2.0], [1.0, 1.0, 1.0]]),
    }
    labels = {
        'smile': jnp.array([0, 1, 1], jnp.int32),
        'age': jnp.array([34.0, 50.0, 60.0]),
        'pose': jnp.array([[12.0, 0.0, -5.0], [0.0, 10.0, 2.0], [0.0, 0.0, 0.0]]),
    }
    masks = {'smile': jnp.array([1.0, 0.0, 1.0]), 'age': jnp.array([1.0, 1.0, 0.0]), 'pose': jnp.array([0.0, 1.0, 1.0])}
    weights = {'smile': 1.0, 'age': 0.5, 'pose': 2.0}
    return outputs, labels, masks, weights


def test_loss_matches_hand_computed_values():
    outputs, labels, masks, weights = _batch()
    scales = {'age': 10.0, 'pose': 20.0}
    total, per_head = multi_head_attribute_loss(outputs, labels, masks, weights, regression_scales=scales)
    smile = (_cross_entropy([2.0, -1.0], 0) + _cross_entropy([-3.0, 1.0], 1)) / 2
    age = (_huber(-4.0 / 10) + _huber(2.0 / 10)) / 2
    pose_row2 = (_huber(0.0) + _huber(30.0 / 20) + _huber(0.0)) / 3  # |1.5| > delta: linear branch
    pose_row3 = 3 * _huber(1.0 / 20) / 3
    pose = (pose_row2 + pose_row3) / 2
    assert float(per_head['smile']) == pytest.approx(smile, rel=1e-6)
    assert float(per_head['age']) == pytest.approx(age, rel=1e-6)
    assert float(per_head['pose']) == pytest.approx(pose, rel=1e-6)
    assert float(total) == pytest.approx(1.0 * smile + 0.5 * age + 2.0 * pose, rel=1e-6)


def test_regression_output_with_trailing_unit_axis_and_default_scale():
    total, per_head = multi_head_attribute_loss({'age': jnp.array([[1.0], [5.0]])}, {'age': jnp.array([1.5, 2.0])},
                                                {'age': jnp.ones(2)}, {'age': 1.0})
    assert float(per_head['age']) == pytest.approx((_huber(-0.5) + _huber(3.0)) / 2)


def test_head_without_labels_gives_exactly_zero_loss_and_gradient():
    outputs, labels, masks, weights = _batch()
    masks = {**masks, 'age': jnp.zeros(3)}
    # Garbage in unlabelled rows must not leak: NaN regression labels, out-of-range class ids.
    labels = {**labels, 'age': jnp.array([jnp.nan, jnp.inf, 1e30]), 'smile': jnp.array([0, 7, 1], jnp.int32)}

    def total(outputs):
        return multi_head_attribute_loss(outputs, labels, masks, weights, regression_scales={'age': 10.0})[0]

    _, per_head = multi_head_attribute_loss(outputs, labels, masks, weights)
    assert float(per_head['age']) == 0.0
    grads = jax.jit(jax.grad(total))(outputs)
    np.testing.assert_array_equal(np.asarray(grads['age']), np.zeros(3))
    # Row 1 of smile is unlabelled: exactly zero gradient; labelled rows do get gradient.
    np.testing.assert_array_equal(np.asarray(grads['smile'][1]), np.zeros(2))
    assert np.all(np.abs(np.asarray(grads['smile'])[[0, 2]]) > 0)
    np.testing.assert_array_equal(np.asarray(grads['pose'][0]), np.zeros(3))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())


def test_empty_batch_of_labels_everywhere_is_zero():
    outputs, labels, _, weights = _batch()
    masks = {name: jnp.zeros(3) for name in outputs}
    total, per_head = multi_head_attribute_loss(outputs, labels, masks, weights)
    assert float(total) == 0.0 and all(float(v) == 0.0 for v in per_head.values())


def test_loss_rejects_bad_input():
    outputs, labels, masks, weights = _batch()
    with pytest.raises(ValueError, match=r"labels must have the same keys.*missing \['age'\]"):
        multi_head_attribute_loss(outputs, {k: v for k, v in labels.items() if k != 'age'}, masks, weights)
    with pytest.raises(ValueError, match=r"weights must have the same keys.*extra \['gender'\]"):
        multi_head_attribute_loss(outputs, labels, masks, {**weights, 'gender': 1.0})
    with pytest.raises(ValueError, match='integer labels'):
        multi_head_attribute_loss(outputs, labels, masks, weights, regression_scales={'smile': 2.0})
    with pytest.raises(ValueError, match='not in outputs'):
        multi_head_attribute_loss(outputs, labels, masks, weights, regression_scales={'beauty': 2.0})
    with pytest.raises(ValueError, match='same shape'):
        multi_head_attribute_loss({**outputs, 'pose': outputs['pose'][:, :2]}, labels, masks, weights)
    with pytest.raises(ValueError, match=r'label_masks\[.smile.\]'):
        multi_head_attribute_loss(outputs, labels, {**masks, 'smile': jnp.ones((3, 1))}, weights)


# ------------------------------------------------------------------------------------------------
# Model.

TINY = dict(widths=(4, 8), blocks=(1, 1), embed_dim=8, head_hidden=6, decoupling_hidden=5)
INDEPENDENT = (('gender', 2), ('quality', 3), ('mask', 2), ('glasses', 2))
ALL_SEVEN = INDEPENDENT + (('age', 1), ('smile', 2), ('face_value', 1))
IMAGES = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)), jnp.uint8)


def _key(seed):
    # XLA:CPU compiles many threefry initialisers slowly (~10 s for these models); 'rbg' keys take ~1 s.
    return jax.random.key(seed, impl='rbg')


def _init_shapes(model, images=IMAGES):
    """Variables as zeros of the right shapes, without running (or compiling) the initialisers."""
    shapes = jax.eval_shape(lambda: model.init(_key(0), images, train=False))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _random_variables(model, seed, images=IMAGES):
    """Variables filled with numpy random values (standing in for trained ones): compiling the real
    initialisers costs seconds per model on these CPUs. BatchNorm variances stay positive."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if 'var' in jax.tree_util.keystr(path):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        return jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, _init_shapes(model, images))


def _apply(model, variables, images=IMAGES):
    return model.apply(variables, images, train=False)


def _paths(tree):
    return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('heads,decoupling', [((('age', 1),), False), (ALL_SEVEN, False),
                                              (ALL_SEVEN + (('pose', 3),), True), ({'smile': 2}, True)])
def test_output_shapes(heads, decoupling):
    model = MultiTaskAttributeNet(heads=heads, decoupling=decoupling, **TINY)
    outputs = jax.eval_shape(lambda: model.apply(model.init(_key(0), IMAGES, train=False), IMAGES, train=False))
    dims = dict(heads)
    assert set(outputs) == set(dims)
    for name, dim in dims.items():
        assert outputs[name].shape == ((2,) if dim == 1 else (2, dim)) and outputs[name].dtype == jnp.float32


def test_backbone_stride_and_image_scaling():
    backbone = ResNetBackbone(widths=(4, 8, 8), blocks=(1, 1, 1), stem_stride=2)
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3)), jnp.uint8)
    variables = _random_variables(backbone, 0, images)
    features = backbone.apply(variables, images, train=False)
    assert features.shape == (1, 4, 4, 8)  # 32 / (2 * 2 * 2)
    as_float = backbone.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
    np.testing.assert_allclose(np.asarray(features), np.asarray(as_float), atol=1e-5)


def test_stages_keep_parameter_names_and_merge_carries_them_over():
    stage1 = MultiTaskAttributeNet(heads=INDEPENDENT, **TINY)
    stage2 = MultiTaskAttributeNet(heads=ALL_SEVEN, **TINY)
    stage3 = MultiTaskAttributeNet(heads=ALL_SEVEN + (('pose', 3),), decoupling=True, **TINY)
    # Stage 1 stands for a trained model; stage 2's new heads do not enter the comparisons; stage 3's
    # decouplers get their real initialisation (the property under test), the rest random values.
    v1, v2, v3 = _random_variables(stage1, 1), _init_shapes(stage2), _random_variables(stage3, 3)
    assert _paths(v1) < _paths(v2) < _paths(v3)
    embed = TINY['embed_dim']
    decoupler = TaskDecoupler(TINY['decoupling_hidden'])
    init_decoupler = jax.jit(lambda key: decoupler.init(key, jnp.ones((2, embed)), jnp.ones((2, embed + 3))))
    for index, (name, _) in enumerate(ALL_SEVEN):
        v3['params'][f'decouple_{name}'] = init_decoupler(_key(index))['params']

    merged = merge_params(v2, v1)
    old_leaves = dict(jax.tree_util.tree_leaves_with_path(v1))
    for path, leaf in jax.tree_util.tree_leaves_with_path(merged):
        expected = old_leaves.get(path, dict(jax.tree_util.tree_leaves_with_path(v2))[path])
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(expected))
    # The trunk and the earlier heads compute what they computed before.
    out1, out2 = _apply(stage1, v1), _apply(stage2, merged)
    for name, _ in INDEPENDENT:
        np.testing.assert_array_equal(np.asarray(out1[name]), np.asarray(out2[name]))

    # The decoupling module starts as the identity: stage 3 reproduces stage 2 exactly.
    out3 = _apply(stage3, merge_params(v3, merged))
    for name, _ in ALL_SEVEN:
        np.testing.assert_allclose(np.asarray(out3[name]), np.asarray(out2[name]), rtol=1e-6, atol=1e-6)


def test_merge_params_rejects_mismatches():
    small = _init_shapes(MultiTaskAttributeNet(heads=(('age', 1),), **TINY))
    small['params']['neck']['kernel'] = small['params']['neck']['kernel'] + 1.0
    wider = _init_shapes(MultiTaskAttributeNet(heads=(('age', 1),), **{**TINY, 'embed_dim': 9}))
    with pytest.raises(ValueError, match='shape mismatch'):
        merge_params(wider, small)
    fewer = _init_shapes(MultiTaskAttributeNet(heads=(('smile', 2),), **TINY))
    with pytest.raises(ValueError, match='allow_dropped'):
        merge_params(fewer, small)
    kept = merge_params(fewer, small, allow_dropped=True)
    np.testing.assert_array_equal(np.asarray(kept['params']['neck']['kernel']),
                                  np.asarray(small['params']['neck']['kernel']))


def test_pose_condition_is_not_trained_by_other_heads():
    model = MultiTaskAttributeNet(heads=(('smile', 2), ('pose', 3)), decoupling=True, **TINY)
    variables = _random_variables(model, 0)  # a gate away from its zero initialisation: the condition matters
    params = variables['params']

    def smile_logit(p):
        return model.apply({**variables, 'params': p}, IMAGES, train=False)['smile'].sum()

    grads = jax.jit(jax.grad(smile_logit))(params)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(grads['head_pose']))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads['decouple_smile']))


def test_bfloat16_compute_and_train_mode_batch_stats():
    model = MultiTaskAttributeNet(heads=ALL_SEVEN, dtype=jnp.bfloat16, **TINY)
    variables = _init_shapes(model)  # the compute dtype does not change the (float32) variables
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))
    outputs, updates = jax.eval_shape(lambda v: model.apply(v, IMAGES, train=True, mutable=['batch_stats']),
                                      variables)
    assert outputs['gender'].dtype == jnp.float32
    assert jax.tree_util.tree_structure(updates['batch_stats']) == jax.tree_util.tree_structure(
        variables['batch_stats'])


def test_model_rejects_bad_configuration():
    def init(module, images=IMAGES):
        return jax.eval_shape(lambda: module.init(_key(0), images, train=False))

    with pytest.raises(ValueError, match='at least one head'):
        init(MultiTaskAttributeNet(heads=(), **TINY))
    with pytest.raises(ValueError, match='duplicate'):
        init(MultiTaskAttributeNet(heads=(('age', 1), ('age', 1)), **TINY))
    with pytest.raises(ValueError, match='equal length'):
        init(ResNetBackbone(widths=(4, 8), blocks=(1,)))
    with pytest.raises(ValueError, match='uint8 or floating'):
        init(ResNetBackbone(widths=(4,), blocks=(1,)), IMAGES.astype(jnp.int32))


# ------------------------------------------------------------------------------------------------
# The trivial predictor every head must beat (jaxface.evaluation.attributes).


def test_trivial_predictor_is_the_training_majority_or_mean_over_usable_labels():
    from jaxface.evaluation.attributes import above_trivial, attribute_metric, trivial_outputs

    # Unusable rows (known 0) hold the would-be majority / an outlier: they must not count.
    labels = np.array([2, 2, 0, 1, 1, 1, 2, 2, 2], np.int32)
    known = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0], np.float32)
    out = trivial_outputs('classification', labels, known, 4, num_classes=3)
    assert out.shape == (4, 3) and np.all(np.argmax(out, -1) == 1)
    assert attribute_metric('classification', out, np.array([1, 1, 0, 2]), np.ones(4)) == 50.0
    ages = np.array([20.0, 40.0, 1000.0], np.float32)
    out = trivial_outputs('regression', ages, np.array([1.0, 1.0, 0.0]), 2)
    np.testing.assert_allclose(out, [30.0, 30.0])
    assert attribute_metric('regression', out, np.array([25.0, 45.0]), np.ones(2)) == pytest.approx(10.0)
    poses = np.array([[10.0, 0.0, 2.0], [-30.0, 4.0, 2.0]], np.float32)
    np.testing.assert_allclose(trivial_outputs('regression', poses, np.ones(2), 3), [[-10.0, 2.0, 2.0]] * 3)
    with pytest.raises(ValueError, match='no training label'):
        trivial_outputs('regression', ages, np.zeros(3), 2)
    # Learned: >= 10 points above the trivial accuracy, MAE <= 0.8 x the trivial MAE.
    assert above_trivial('classification', 60.0, 50.0) and not above_trivial('classification', 59.9, 50.0)
    assert above_trivial('regression', 8.0, 10.0) and not above_trivial('regression', 8.1, 10.0)
