"""Loss functions against values written out by hand (explicit loops over cells, plain math)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.losses import (
    centernet_heatmap_focal_loss,
    centernet_loss,
    feature_distillation_loss,
    head_distillation_loss,
    kd_logit_loss,
    masked_l1_loss,
    pairwise_margin_loss,
)


# Value tests go through jax.jit: on CPU an eager call compiles every primitive separately, which
# costs far more than one compile per function. Eager calls are compared with these at the end.
focal_jit = jax.jit(centernet_heatmap_focal_loss)
masked_l1_jit = jax.jit(masked_l1_loss)
centernet_jit = jax.jit(centernet_loss, static_argnames=("wh_weight", "offset_weight"))
kd_jit = jax.jit(kd_logit_loss)
feature_jit = jax.jit(feature_distillation_loss)
head_jit = jax.jit(head_distillation_loss, static_argnames=("heatmap_weight", "wh_weight", "offset_weight"))


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _focal_by_loop(logits, target):
    """CenterNet focal loss one cell at a time, alpha=2, beta=4."""
    positive_sum, negative_sum, num_positive = 0.0, 0.0, 0
    for index in np.ndindex(*logits.shape):
        p = min(max(_sigmoid(float(logits[index])), 1e-4), 1 - 1e-4)
        y = float(target[index])
        if y == 1.0:
            num_positive += 1
            positive_sum += -((1 - p) ** 2) * math.log(p)
        else:
            negative_sum += -((1 - y) ** 4) * (p**2) * math.log(1 - p)
    if num_positive == 0:
        return negative_sum
    return (positive_sum + negative_sum) / num_positive


def _masked_l1_by_loop(pred, target, mask):
    batch, height, width, channels = pred.shape
    error, count = 0.0, 0.0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                weight = float(mask[b, y, x])
                count += weight
                for k in range(channels):
                    error += abs(float(pred[b, y, x, k]) - float(target[b, y, x, k])) * weight
    return error / (count + 1e-4)


# --- focal loss -----------------------------------------------------------------------------


def test_focal_loss_closed_form_single_positive_and_negative():
    # logit 0 -> p = 0.5. Positive: -(0.5)^2 ln 0.5; negative (target 0): -(1)^4 (0.5)^2 ln 0.5.
    logits = jnp.zeros((1, 1, 2, 1))
    target = jnp.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    expected = 0.5 * math.log(2.0)
    np.testing.assert_allclose(focal_jit(logits, target), expected, rtol=1e-6)


def test_focal_loss_with_positives_normalises_by_batch_positive_count():
    logits = np.array(
        [[[[0.0, 1.0], [1.0, -2.0]], [[3.0, -0.5], [-4.0, 0.2]]],
         [[[2.0, -1.0], [0.5, 0.0]], [[-3.0, 1.5], [0.7, -0.1]]]]
    ).reshape(2, 2, 2, 2)
    target = np.zeros((2, 2, 2, 2))
    target[0, 0, 0, 0] = 1.0  # two centres in image 0 ...
    target[0, 1, 1, 0] = 1.0
    target[0, 0, 1, 0] = 0.5
    target[0, 1, 0, 1] = 0.25
    target[1, 1, 1, 1] = 1.0  # ... and one in image 1: N = 3 over the whole batch
    target[1, 1, 0, 1] = 0.8
    expected = _focal_by_loop(logits, target)
    got = focal_jit(jnp.asarray(logits), jnp.asarray(target))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Normalising each image by its own count and averaging images would give another value.
    per_image = np.mean([_focal_by_loop(logits[b:b + 1], target[b:b + 1]) for b in range(2)])
    assert abs(per_image - expected) > 1e-2
    # Same cells with only one positive: the normaliser must change, not just the positive term.
    target_one = target.copy()
    target_one[0, 1, 1, 0] = 0.0
    np.testing.assert_allclose(
        focal_jit(jnp.asarray(logits), jnp.asarray(target_one)),
        _focal_by_loop(logits, target_one),
        rtol=1e-5,
    )


def test_focal_loss_without_positives_is_unnormalised_negative_sum():
    logits = np.array([0.0, 2.0, -1.0, 0.5]).reshape(1, 2, 2, 1)
    target = np.array([0.0, 0.5, 0.9, 0.0]).reshape(1, 2, 2, 1)
    expected = 0.0
    for z, y in [(0.0, 0.0), (2.0, 0.5), (-1.0, 0.9), (0.5, 0.0)]:
        p = _sigmoid(z)
        expected += -((1 - y) ** 4) * p**2 * math.log(1 - p)
    got = focal_jit(jnp.asarray(logits), jnp.asarray(target))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    grad = jax.jit(jax.grad(centernet_heatmap_focal_loss))(jnp.asarray(logits), jnp.asarray(target))
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_focal_loss_clips_saturated_probabilities():
    # sigmoid(50) rounds to 1 in float32; unclipped log(1 - p) would be -inf.
    logits = jnp.array([50.0, -50.0]).reshape(1, 1, 2, 1)
    target = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1)
    p_high, p_low = 1 - 1e-4, 1e-4
    expected = -(p_high**2) * math.log(1 - p_high) + -((1 - p_low) ** 2) * math.log(p_low)
    np.testing.assert_allclose(focal_jit(logits, target), expected, rtol=1e-3)


def test_focal_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"logits and target must have the same shape.*\(1, 2, 2, 1\)"):
        focal_jit(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"logits must have rank 4"):
        focal_jit(jnp.zeros((2, 2, 1)), jnp.zeros((2, 2, 1)))


# --- masked L1 ------------------------------------------------------------------------------


def test_masked_l1_sums_channels_and_divides_by_masked_cells():
    pred = np.arange(16, dtype=np.float32).reshape(1, 2, 4, 2) / 4.0
    target = np.ones((1, 2, 4, 2), np.float32)
    mask = np.zeros((1, 2, 4), np.float32)
    mask[0, 0, 1] = 1.0  # pred (0.5, 0.75): |.-1| sums to 0.75
    mask[0, 1, 3] = 1.0  # pred (3.5, 3.75): |.-1| sums to 5.25
    expected_by_hand = (0.75 + 5.25) / (2 + 1e-4)
    np.testing.assert_allclose(_masked_l1_by_loop(pred, target, mask), expected_by_hand, rtol=1e-6)
    got = masked_l1_jit(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
    np.testing.assert_allclose(got, expected_by_hand, rtol=1e-6)
    got_trailing_axis = masked_l1_jit(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask)[..., None])
    np.testing.assert_allclose(got_trailing_axis, expected_by_hand, rtol=1e-6)


def test_masked_l1_all_zero_mask_is_zero_with_finite_gradient():
    pred = jnp.full((2, 3, 3, 2), 5.0)
    target = jnp.zeros((2, 3, 3, 2))
    mask = jnp.zeros((2, 3, 3))
    assert float(masked_l1_jit(pred, target, mask)) == 0.0
    grad = jax.jit(jax.grad(masked_l1_loss))(pred, target, mask)
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)


def test_masked_l1_rejects_bad_mask_shape():
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 2, 2\) or \(1, 2, 2, 1\).*got \(1, 2, 2, 2\)"):
        masked_l1_loss(jnp.zeros((1, 2, 2, 2)), jnp.zeros((1, 2, 2, 2)), jnp.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"pred and target must have the same shape"):
        masked_l1_loss(jnp.zeros((1, 2, 2, 2)), jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2)))


# --- full CenterNet loss --------------------------------------------------------------------


def _small_centernet_example():
    rng = np.random.default_rng(0)
    heads = {
        "heatmap": rng.normal(size=(2, 3, 3, 2)).astype(np.float32),
        "wh": rng.normal(size=(2, 3, 3, 2)).astype(np.float32),
        "offset": rng.normal(size=(2, 3, 3, 2)).astype(np.float32),
    }
    heatmap = np.zeros((2, 3, 3, 2), np.float32)
    heatmap[0, 1, 1, 0] = 1.0
    heatmap[0, 1, 2, 0] = 0.6
    heatmap[1, 2, 0, 1] = 1.0
    mask = np.zeros((2, 3, 3), np.float32)
    mask[0, 1, 1] = 1.0
    mask[1, 2, 0] = 1.0
    targets = {
        "heatmap": heatmap,
        "wh": rng.uniform(1, 4, size=(2, 3, 3, 2)).astype(np.float32),
        "offset": rng.uniform(0, 1, size=(2, 3, 3, 2)).astype(np.float32),
        "mask": mask,
    }
    return heads, targets


def test_centernet_loss_combines_terms_with_weights():
    heads, targets = _small_centernet_example()
    hm = _focal_by_loop(heads["heatmap"], targets["heatmap"])
    wh = _masked_l1_by_loop(heads["wh"], targets["wh"], targets["mask"])
    off = _masked_l1_by_loop(heads["offset"], targets["offset"], targets["mask"])
    total, terms = centernet_jit(
        jax.tree.map(jnp.asarray, heads), jax.tree.map(jnp.asarray, targets), wh_weight=0.5, offset_weight=2.0
    )
    np.testing.assert_allclose(terms["heatmap"], hm, rtol=1e-5)
    np.testing.assert_allclose(terms["wh"], wh, rtol=1e-5)
    np.testing.assert_allclose(terms["offset"], off, rtol=1e-5)
    np.testing.assert_allclose(total, hm + 0.5 * wh + 2.0 * off, rtol=1e-5)
    default_total, _ = centernet_jit(heads, targets)
    np.testing.assert_allclose(default_total, hm + 0.1 * wh + 1.0 * off, rtol=1e-5)


def test_centernet_loss_rejects_missing_keys():
    heads, targets = _small_centernet_example()
    del targets["mask"]
    with pytest.raises(ValueError, match=r"targets is missing keys \['mask'\]"):
        centernet_loss(heads, targets)


# --- logit distillation ---------------------------------------------------------------------


def test_kd_loss_zero_for_equal_logits():
    logits = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    np.testing.assert_allclose(kd_jit(logits, logits, 3.0), 0.0, atol=1e-6)


def test_kd_loss_two_class_known_value_and_batch_mean():
    # teacher logits (ln 3, 0) -> p = (3/4, 1/4); student (0, 0) -> q = (1/2, 1/2).
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    teacher = jnp.array([[math.log(3.0), 0.0]])
    student = jnp.zeros((1, 2))
    np.testing.assert_allclose(kd_jit(student, teacher, 1.0), kl, rtol=1e-5)
    # A second example with identical logits adds KL 0, so the batch mean halves.
    teacher_batch = jnp.array([[math.log(3.0), 0.0], [1.0, 1.0]])
    student_batch = jnp.zeros((2, 2))
    np.testing.assert_allclose(kd_jit(student_batch, teacher_batch, 1.0), kl / 2, rtol=1e-5)


def test_kd_loss_temperature_scaling():
    # At T = 2, logits (2 ln 3, 0) soften to (ln 3, 0): same KL as above, times T^2 = 4.
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    teacher = jnp.array([[2 * math.log(3.0), 0.0]])
    student = jnp.zeros((1, 2))
    np.testing.assert_allclose(kd_jit(student, teacher, 2.0), 4.0 * kl, rtol=1e-5)
    np.testing.assert_allclose(kd_jit(student, teacher, jnp.float32(2.0)), 4.0 * kl, rtol=1e-5)


def test_kd_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"student_logits and teacher_logits must have the same shape, got \(2, 3\) and \(2, 4\)"):
        kd_logit_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got 0"):
        kd_logit_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0)


# --- feature distillation -------------------------------------------------------------------


def test_feature_loss_averages_per_level_mse_over_two_levels():
    student_0 = np.array([1.0, 2.0]).reshape(1, 1, 1, 2)
    teacher_0 = np.array([0.0, 0.0]).reshape(1, 1, 1, 2)  # MSE (1 + 4) / 2 = 2.5
    student_1 = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    teacher_1 = np.full((1, 2, 2, 2), 1.0, np.float32)
    squared = 0.0
    for value in range(8):
        squared += (value - 1.0) ** 2
    level_1 = squared / 8  # (1 + 0 + 1 + 4 + 9 + 16 + 25 + 36) / 8 = 11.5
    assert level_1 == 11.5
    expected = (2.5 + level_1) / 2
    got = feature_jit(
        [jnp.asarray(student_0), jnp.asarray(student_1)], (jnp.asarray(teacher_0), jnp.asarray(teacher_1))
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_feature_loss_rejects_mismatches():
    a = jnp.zeros((1, 4, 4, 8))
    with pytest.raises(ValueError, match=r"student_features has 2 levels but teacher_features has 1"):
        feature_distillation_loss([a, a], [a])
    with pytest.raises(ValueError, match=r"feature level 1: student shape \(1, 4, 4, 8\) does not match teacher shape \(1, 4, 4, 16\)"):
        feature_distillation_loss([a, a], [a, jnp.zeros((1, 4, 4, 16))])
    with pytest.raises(ValueError, match=r"at least one feature level"):
        feature_distillation_loss([], [])


# --- head distillation ----------------------------------------------------------------------


def test_head_distillation_known_values():
    student = {
        "heatmap": np.array([0.0, 1.0, -1.0, 2.0]).reshape(1, 2, 2, 1),
        "wh": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).reshape(1, 2, 2, 2),
        "offset": np.full((1, 2, 2, 2), 0.5),
    }
    teacher = {
        "heatmap": np.array([0.0, 0.0, 1.0, 2.0]).reshape(1, 2, 2, 1),
        "wh": np.zeros((1, 2, 2, 2)),
        "offset": np.array([0.0, 1.0, 0.25, 0.25, 9.0, 9.0, 9.0, 9.0]).reshape(1, 2, 2, 2),
    }
    mask = np.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2)
    heatmap = (
        (_sigmoid(0.0) - _sigmoid(0.0)) ** 2
        + (_sigmoid(1.0) - _sigmoid(0.0)) ** 2
        + (_sigmoid(-1.0) - _sigmoid(1.0)) ** 2
        + (_sigmoid(2.0) - _sigmoid(2.0)) ** 2
    ) / 2  # summed over cells, divided by the 2 object centres
    wh = ((1 + 2) + (3 + 4)) / (2 + 1e-4)
    offset = ((0.5 + 0.5) + (0.25 + 0.25)) / (2 + 1e-4)
    total, terms = head_jit(
        jax.tree.map(jnp.asarray, student), jax.tree.map(jnp.asarray, teacher), jnp.asarray(mask),
        heatmap_weight=3.0,
    )
    np.testing.assert_allclose(terms["heatmap"], heatmap, rtol=1e-5)
    np.testing.assert_allclose(terms["wh"], wh, rtol=1e-5)
    np.testing.assert_allclose(terms["offset"], offset, rtol=1e-5)
    np.testing.assert_allclose(total, 3.0 * heatmap + 0.1 * wh + 1.0 * offset, rtol=1e-5)


def test_head_distillation_rejects_mismatched_heads():
    heads = {"heatmap": jnp.zeros((1, 2, 2, 3)), "wh": jnp.zeros((1, 2, 2, 2)), "offset": jnp.zeros((1, 2, 2, 2))}
    teacher = dict(heads, heatmap=jnp.zeros((1, 2, 2, 4)))
    with pytest.raises(ValueError, match=r"student_heads\['heatmap'\] and teacher_heads\['heatmap'\] must have the same shape"):
        head_distillation_loss(heads, teacher, jnp.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"teacher_heads is missing keys \['offset'\]"):
        head_distillation_loss(heads, {"heatmap": heads["heatmap"], "wh": heads["wh"]}, jnp.zeros((1, 2, 2)))


# --- stop_gradient and jit ------------------------------------------------------------------


def test_teacher_inputs_get_zero_gradient_and_student_does_not():
    rng = np.random.default_rng(1)
    student_logits, teacher_logits = (jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for _ in range(2))
    grad_student, grad_teacher = jax.jit(jax.grad(kd_logit_loss, argnums=(0, 1)))(student_logits, teacher_logits, 2.0)
    assert np.all(grad_teacher == 0) and np.any(grad_student != 0)

    student_feats = [jnp.asarray(rng.normal(size=(1, 2, 2, 3)), jnp.float32) for _ in range(2)]
    teacher_feats = [jnp.asarray(rng.normal(size=(1, 2, 2, 3)), jnp.float32) for _ in range(2)]
    grad_student, grad_teacher = jax.jit(jax.grad(feature_distillation_loss, argnums=(0, 1)))(student_feats, teacher_feats)
    assert all(np.all(g == 0) for g in grad_teacher)
    assert all(np.any(g != 0) for g in grad_student)

    def make_heads():
        return {key: jnp.asarray(rng.normal(size=(1, 2, 2, 2)), jnp.float32) for key in ("heatmap", "wh", "offset")}

    mask = jnp.array([1.0, 0.0, 0.0, 1.0]).reshape(1, 2, 2)

    def head_total(student, teacher):
        return head_distillation_loss(student, teacher, mask)[0]

    grad_student, grad_teacher = jax.jit(jax.grad(head_total, argnums=(0, 1)))(make_heads(), make_heads())
    assert all(np.all(g == 0) for g in jax.tree.leaves(grad_teacher))
    assert all(np.any(g != 0) for g in jax.tree.leaves(grad_student))


def test_losses_give_same_values_under_jit():
    heads, targets = _small_centernet_example()
    heads = jax.tree.map(jnp.asarray, heads)
    targets = jax.tree.map(jnp.asarray, targets)
    eager_total, eager_terms = centernet_loss(heads, targets)
    jit_total, jit_terms = centernet_jit(heads, targets)
    np.testing.assert_allclose(jit_total, eager_total, rtol=1e-6)
    for key in eager_terms:
        np.testing.assert_allclose(jit_terms[key], eager_terms[key], rtol=1e-6)

    # No positives: the branch is chosen from a traced count, so it must work inside jit too.
    no_positive = jnp.where(targets["heatmap"] == 1.0, 0.5, targets["heatmap"])
    np.testing.assert_allclose(
        focal_jit(heads["heatmap"], no_positive),
        _focal_by_loop(np.asarray(heads["heatmap"]), np.asarray(no_positive)),
        rtol=1e-5,
    )

    student_logits = jnp.array([[0.0, 0.0]])
    teacher_logits = jnp.array([[2 * math.log(3.0), 0.0]])
    np.testing.assert_allclose(
        kd_jit(student_logits, teacher_logits, 2.0),
        kd_logit_loss(student_logits, teacher_logits, 2.0),
        rtol=1e-6,
    )
    feats = [heads["wh"], heads["offset"]]
    np.testing.assert_allclose(
        feature_jit(feats, feats[::-1]), feature_distillation_loss(feats, feats[::-1]), rtol=1e-6
    )
    jit_head_total, _ = head_jit(heads, heads, targets["mask"])
    np.testing.assert_allclose(jit_head_total, 0.0, atol=1e-6)


def test_pairwise_margin_loss_known_value_and_finite_gradient_at_zero_distance():
    embeddings = jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    ids = jnp.array([0, 0, 1])
    # pairs: (0,1) same id, d^2 = 25; (0,2) other id, d = 1 -> (2 - 1)^2 = 1; (1,2) d = sqrt(18) > 2 -> 0
    value = jax.jit(pairwise_margin_loss, static_argnums=2)(embeddings, ids, 2.0)
    np.testing.assert_allclose(float(value), 26.0 / 3.0, rtol=1e-6)
    # two equal embeddings of different identities: pushed apart with a finite gradient
    grad = jax.grad(pairwise_margin_loss)(jnp.zeros((2, 3)), jnp.array([0, 1]), 1.0)
    assert np.isfinite(np.asarray(grad)).all()
    assert float(pairwise_margin_loss(jnp.zeros((1, 3)), jnp.array([0]), 1.0)) == 0.0
    with pytest.raises(ValueError, match=r"ids must have shape \[B\] = \(3,\)"):
        pairwise_margin_loss(embeddings, jnp.array([0, 1]), 1.0)
    with pytest.raises(ValueError, match="margin must be > 0"):
        pairwise_margin_loss(embeddings, ids, 0.0)
