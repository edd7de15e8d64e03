"""Tests for CenterNet decoding, VOC average precision and the report plots.

As in scenic's tests, a fake model with fixed outputs stands in for a trained network, so every
metric below has an exact expected value worked out by hand.
"""

import jax
import numpy as np
import pytest
from PIL import Image

from jaxface.evaluation import decode_centernet, detection_average_precision, iou_matrix
from jaxface.evaluation import plots

BACKGROUND_LOGIT = -10.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def fake_centernet_heads(gt_boxes, gt_labels, *, height, width, num_classes, peak_logit=8.0):
    """A fake model's fixed outputs: perfect head maps for the given ground truth.

    Each box puts `peak_logit` at the cell holding its centre in its class channel, the exact
    (height, width) in cells in `wh` and the centre's position inside the cell in `offset`.
    """
    batch = gt_boxes.shape[0]
    heatmap = np.full((batch, height, width, num_classes), BACKGROUND_LOGIT, np.float32)
    wh = np.zeros((batch, height, width, 2), np.float32)
    offset = np.zeros((batch, height, width, 2), np.float32)
    for b in range(batch):
        for box, label in zip(gt_boxes[b], gt_labels[b]):
            if label < 0:
                continue
            ymin, xmin, ymax, xmax = box * np.array([height, width, height, width])
            centre_y, centre_x = (ymin + ymax) / 2, (xmin + xmax) / 2
            row, col = int(centre_y), int(centre_x)
            heatmap[b, row, col, label] = peak_logit
            wh[b, row, col] = (ymax - ymin, xmax - xmin)
            offset[b, row, col] = (centre_y - row, centre_x - col)
    return heatmap, wh, offset


# ----------------------------------------------------------------------------------- decoding


def two_peak_heads():
    """4x6 grid, 2 classes: peak A (class 0, logit 2) at (1, 1) with a weaker class-0 neighbour
    (logit 1.9) at (1, 2), and peak B (class 1, logit 0) at (3, 5) near the bottom-right corner."""
    heatmap = np.full((1, 4, 6, 2), BACKGROUND_LOGIT, np.float32)
    wh = np.zeros((1, 4, 6, 2), np.float32)
    offset = np.zeros((1, 4, 6, 2), np.float32)
    heatmap[0, 1, 1, 0] = 2.0
    heatmap[0, 1, 2, 0] = 1.9  # not a 3x3 max: must be suppressed though it outscores B
    heatmap[0, 3, 5, 1] = 0.0
    wh[0, 1, 1] = (2.0, 1.0)
    offset[0, 1, 1] = (0.5, 0.25)
    wh[0, 1, 2] = (9.0, 9.0)
    wh[0, 3, 5] = (2.0, 4.0)
    offset[0, 3, 5] = (0.5, 0.5)
    return heatmap, wh, offset


def test_decode_keeps_peaks_suppresses_neighbour_and_places_boxes():
    heatmap, wh, offset = two_peak_heads()
    decoded = decode_centernet(heatmap, wh, offset, top_k=2)
    # A: centre (1.5, 1.25), size 2x1 -> y 0.5..2.5 of 4, x 0.75..1.75 of 6.
    # B: centre (3.5, 5.5), size 2x4 -> y 2.5..4.5 of 4, x 3.5..7.5 of 6, clipped at 1.
    expected_boxes = np.array([[[0.5 / 4, 0.75 / 6, 2.5 / 4, 1.75 / 6], [2.5 / 4, 3.5 / 6, 1.0, 1.0]]])
    np.testing.assert_allclose(decoded["boxes"], expected_boxes, atol=1e-6)
    np.testing.assert_allclose(decoded["scores"], [[sigmoid(2.0), sigmoid(0.0)]], atol=1e-6)
    np.testing.assert_array_equal(decoded["classes"], [[0, 1]])
    assert decoded["classes"].dtype == np.int32
    assert decoded["boxes"].shape == (1, 2, 4) and decoded["scores"].shape == (1, 2)


def test_decode_third_detection_is_background_not_the_suppressed_neighbour():
    heatmap, wh, offset = two_peak_heads()
    decoded = decode_centernet(heatmap, wh, offset, top_k=3)
    # Flat background cells are their own 3x3 max and survive with sigmoid(-10); the 1.9 cell does not.
    np.testing.assert_allclose(decoded["scores"][0, 2], sigmoid(BACKGROUND_LOGIT), rtol=1e-5)


def test_decode_under_jit_matches_eager():
    heads = two_peak_heads()
    eager = decode_centernet(*heads, top_k=5)
    jitted = jax.jit(decode_centernet, static_argnames="top_k")(*heads, top_k=5)
    for key in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(eager[key], jitted[key])


def test_decode_rejects_bad_inputs():
    heatmap, wh, offset = two_peak_heads()
    with pytest.raises(ValueError, match="heatmap_logits must have rank 4"):
        decode_centernet(heatmap[0], wh, offset)
    with pytest.raises(ValueError, match="wh must have shape"):
        decode_centernet(heatmap, wh[..., :1], offset)
    with pytest.raises(ValueError, match="top_k must be an int"):
        decode_centernet(heatmap, wh, offset, top_k=4 * 6 * 2 + 1)


# ---------------------------------------------------------------------------------------- IoU


def test_iou_matrix_known_values():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 1.0, 1.0]])
    # a0 vs b1: intersection 0.25^2 = 1/16, union 2 * 1/4 - 1/16 = 7/16 -> 1/7.
    expected = np.array([[1.0, 1.0 / 7.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(iou_matrix(a, b), expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"b must have shape \[N, 4\]"):
        iou_matrix(a, b[:, :3])


# ------------------------------------------------------------------------- average precision


def box(y, x, size=0.2):
    return [y, x, y + size, x + size]


def test_perfect_predictions_from_fake_model_give_ap_one():
    gt_boxes = np.array(
        [
            [box(0.1, 0.1), box(0.5, 0.6, 0.3), box(0.0, 0.0)],
            [box(0.7, 0.2), [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        ],
        np.float32,
    )
    gt_labels = np.array([[0, 1, 1], [2, -1, -1]])
    heads = fake_centernet_heads(gt_boxes, gt_labels, height=8, width=8, num_classes=3)
    decoded = jax.device_get(decode_centernet(*heads, top_k=6))
    result = detection_average_precision(
        decoded["boxes"], decoded["scores"], decoded["classes"], gt_boxes, gt_labels,
        num_classes=3, class_names=["face", "hand", "cell"],
    )
    assert result == {"mAP": 1.0, "AP/face": 1.0, "AP/hand": 1.0, "AP/cell": 1.0}


def average_precision(detections, gt, *, num_classes, **kwargs):
    """detections: per image a list of (box, score, class); gt: per image a list of (box, label).
    Pads both to stacked arrays (-1 classes / labels) the way batched evaluation sees them."""
    num_detections = max(1, max(len(d) for d in detections))
    num_gt = max(1, max(len(g) for g in gt))
    boxes = np.zeros((len(detections), num_detections, 4))
    scores = np.zeros((len(detections), num_detections))
    classes = np.full((len(detections), num_detections), -1)
    gt_boxes = np.zeros((len(gt), num_gt, 4))
    gt_labels = np.full((len(gt), num_gt), -1)
    for i, image_detections in enumerate(detections):
        for j, (b, s, c) in enumerate(image_detections):
            boxes[i, j], scores[i, j], classes[i, j] = b, s, c
    for i, image_gt in enumerate(gt):
        for j, (b, label) in enumerate(image_gt):
            gt_boxes[i, j], gt_labels[i, j] = b, label
    return detection_average_precision(
        boxes, scores, classes, gt_boxes, gt_labels, num_classes=num_classes, **kwargs
    )


def test_false_positive_ranked_above_true_positive_and_missed_gt():
    g1, g2, g3 = box(0.1, 0.1), box(0.6, 0.6), box(0.3, 0.3)
    detections = [
        [(box(0.5, 0.0), 0.9, 0), (g1, 0.8, 0), (box(0.0, 0.7), 0.6, 0), (g2, 0.95, 1)],
        [(g3, 0.7, 0)],
    ]
    gt = [[(g1, 0), (g2, 0), (g2, 1)], [(g3, 0)]]
    # Class 0: 3 GT (g1, g2 in image 0, g3 in image 1). Ranked detections: 0.9 FP (no overlap),
    # 0.8 TP (g1), 0.7 TP (g3), 0.6 FP; g2 is never found.
    #   cumulative TP 0, 1, 2, 2   FP 1, 1, 1, 2
    #   recall        0, 1/3, 2/3, 2/3
    #   precision     0, 1/2, 2/3, 1/2
    #   envelope (running max from the right) at the recall steps 1/3 and 2/3: 2/3 and 2/3
    #   AP = (1/3 - 0) * 2/3 + (2/3 - 1/3) * 2/3 = 4/9
    # Class 1: its only GT found by the top detection: AP = 1.  mAP = (4/9 + 1) / 2 = 13/18.
    # (Without the envelope the first step would score precision 1/2, giving AP 7/18.)
    result = average_precision(detections, gt, num_classes=2)
    assert result["AP/0"] == pytest.approx(4 / 9, abs=1e-12)
    assert result["AP/1"] == 1.0
    assert result["mAP"] == pytest.approx(13 / 18, abs=1e-12)


def test_duplicate_detection_is_false_positive():
    a, b = box(0.1, 0.1), box(0.6, 0.6)
    duplicate_of_a = [0.1, 0.1, 0.3, 0.29]  # IoU 0.95 with a
    detections = [[(a, 0.9, 0), (duplicate_of_a, 0.8, 0), (b, 0.7, 0)]]
    # TP, FP (a is taken), TP: recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (it would be 1 if the duplicate counted as a hit).
    result = average_precision(detections, [[(a, 0), (b, 0)]], num_classes=1)
    assert result["AP/0"] == pytest.approx(5 / 6, abs=1e-12)


def test_detection_matches_best_iou_gt_even_if_taken_like_voc():
    left, right = [0.0, 0.0, 0.4, 0.4], [0.0, 0.1, 0.4, 0.5]
    between = [0.0, 0.04, 0.4, 0.44]  # IoU 0.818 with left, 0.739 with right
    detections = [[(left, 0.9, 0), (between, 0.8, 0), (right, 0.7, 0)]]
    # VOC: 'between' takes its best GT, 'left', already matched -> TP, FP, TP: AP 5/6 as in the
    # duplicate case. Matching the best *unmatched* GT instead (COCO style) would give TP, TP, FP: 1.
    result = average_precision(detections, [[(left, 0), (right, 0)]], num_classes=1)
    assert result["AP/0"] == pytest.approx(5 / 6, abs=1e-12)


def test_class_without_gt_is_nan_and_excluded_from_map():
    g = box(0.2, 0.2)
    detections = [[(g, 0.9, 0), (box(0.6, 0.6), 0.95, 2)]]  # class 2 only has a false positive
    result = average_precision(detections, [[(g, 0), (box(0.5, 0.1), 1)]], num_classes=3,
                               class_names=["a", "b", "c"])
    assert result["AP/a"] == 1.0
    assert result["AP/b"] == 0.0  # GT but no detections
    assert np.isnan(result["AP/c"])
    assert result["mAP"] == 0.5
    assert set(result) == {"mAP", "AP/a", "AP/b", "AP/c"}


def test_no_ground_truth_at_all_gives_nan_map():
    result = average_precision([[(box(0.1, 0.1), 0.9, 0)]], [[]], num_classes=2)
    assert np.isnan(result["mAP"]) and np.isnan(result["AP/0"]) and np.isnan(result["AP/1"])


def test_padding_labels_are_ignored():
    g = box(0.2, 0.2)
    ghost = box(0.6, 0.6)
    # A padded GT row (label -1) lies exactly under a detection: it must neither count as a GT to
    # find nor match the detection, so that detection is a false positive ranked first.
    detections = [[(ghost, 0.9, 0), (g, 0.8, 0), (g, 0.99, -1)]]  # the class -1 detection is padding
    result = average_precision(detections, [[(g, 0), (ghost, -1)]], num_classes=1)
    # FP then TP with 1 GT: recall 0, 1; precision 0, 1/2 -> AP = 1/2.
    assert result["AP/0"] == 0.5


def test_iou_threshold_is_inclusive_and_classes_must_agree():
    gt_box = [0.0, 0.0, 1.0, 1.0]
    half = [0.0, 0.0, 1.0, 0.5]  # IoU exactly 0.5
    assert average_precision([[(half, 0.9, 0)]], [[(gt_box, 0)]], num_classes=1)["AP/0"] == 1.0
    strict = average_precision([[(half, 0.9, 0)]], [[(gt_box, 0)]], num_classes=1, iou_threshold=0.51)
    assert strict["AP/0"] == 0.0
    wrong_class = average_precision([[(gt_box, 0.9, 1)]], [[(gt_box, 0)]], num_classes=2)
    assert wrong_class["AP/0"] == 0.0 and np.isnan(wrong_class["AP/1"])


def test_average_precision_rejects_bad_inputs():
    boxes = np.zeros((2, 3, 4))
    scores = np.zeros((2, 3))
    classes = np.zeros((2, 3), np.int32)
    gt_boxes = np.zeros((2, 1, 4))
    gt_labels = np.zeros((2, 1), np.int32)
    with pytest.raises(ValueError, match="scores and classes must have shape"):
        detection_average_precision(boxes, scores[:1], classes, gt_boxes, gt_labels, num_classes=1)
    with pytest.raises(ValueError, match="gt_boxes must have shape"):
        detection_average_precision(boxes, scores, classes, gt_boxes[:1], gt_labels, num_classes=1)
    with pytest.raises(ValueError, match="must be < num_classes=1"):
        detection_average_precision(boxes, scores, classes, gt_boxes, gt_labels + 1, num_classes=1)
    with pytest.raises(ValueError, match="must be integer arrays"):
        detection_average_precision(
            boxes, scores, classes.astype(float), gt_boxes, gt_labels, num_classes=1
        )
    with pytest.raises(ValueError, match="class_names must have num_classes=1 entries"):
        detection_average_precision(boxes, scores, classes, gt_boxes, gt_labels, num_classes=1,
                                    class_names=["a", "b"])


# -------------------------------------------------------------------------------------- plots


def assert_png(path, min_size=(100, 100)):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        # A blank canvas would have one colour; a drawn figure has many.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 10


def test_save_detection_grid_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(5, 32, 48, 3)).astype(np.float32)  # rescaled for display
    boxes = np.tile(np.array([[0.1, 0.1, 0.6, 0.5], [0.3, 0.4, 0.9, 0.95]]), (5, 1, 1))
    scores = np.tile(np.array([0.9, 0.2]), (5, 1))
    classes = np.tile(np.array([0, 1]), (5, 1))
    gt_labels = np.tile(np.array([1, -1]), (5, 1))
    path = plots.save_detection_grid(
        tmp_path / "sub" / "grid.png", images, boxes, scores, classes, class_names=["face", "hand"],
        gt_boxes=boxes[:, ::-1], gt_labels=gt_labels, max_images=4, title="val detections",
    )
    assert path == str(tmp_path / "sub" / "grid.png")
    assert_png(path)
    grey = plots.save_detection_grid(
        tmp_path / "grey.png", (images[..., 0] > 0).astype(np.uint8) * 255, boxes, scores, classes,
        class_names=["face", "hand"],
    )
    assert_png(grey)


def test_save_detection_grid_rejects_bad_inputs(tmp_path):
    images = np.zeros((2, 16, 16, 3), np.float32)
    boxes, scores, classes = np.zeros((2, 1, 4)), np.ones((2, 1)), np.zeros((2, 1), np.int32)
    with pytest.raises(ValueError, match="boxes must have shape"):
        plots.save_detection_grid(
            tmp_path / "x.png", images, boxes[:1], scores, classes, class_names=["a"]
        )
    with pytest.raises(ValueError, match="classes must be < len"):
        plots.save_detection_grid(
            tmp_path / "x.png", images, boxes, scores, classes + 1, class_names=["a"]
        )
    with pytest.raises(ValueError, match="given together"):
        plots.save_detection_grid(tmp_path / "x.png", images, boxes, scores, classes, class_names=["a"],
                                  gt_boxes=boxes)
    assert not (tmp_path / "x.png").exists()


def test_save_curves_writes_png(tmp_path):
    steps = np.arange(0, 500, 10)
    path = plots.save_curves(
        tmp_path / "loss.png",
        {
            "baseline": (steps, 2.0 * np.exp(-steps / 200) + 0.1),
            "distilled": (steps, np.exp(-steps / 100) + 0.05),
        },
        title="training loss", ylabel="loss", log_y=True,
    )
    assert_png(path)
    with pytest.raises(ValueError, match="values <= 0"):
        plots.save_curves(
            tmp_path / "bad.png", {"a": ([0, 1], [1.0, 0.0])}, title="t", ylabel="y", log_y=True
        )
    with pytest.raises(ValueError, match="equal length"):
        plots.save_curves(tmp_path / "bad.png", {"a": ([0, 1, 2], [1.0, 0.5])}, title="t", ylabel="y")


def test_save_bar_chart_writes_png(tmp_path):
    groups = {
        "baseline": {"mAP": 0.41, "AP/face": 0.52, "AP/hand": 0.30},
        "distilled": {"mAP": 0.47, "AP/face": 0.55, "AP/hand": 0.39},
        "no-offset": {"mAP": 0.22, "AP/face": 0.25},  # a missing bar stays empty
    }
    path = plots.save_bar_chart(tmp_path / "bars.png", groups, title="detection", ylabel="AP")
    assert_png(path)
    with pytest.raises(ValueError, match="at least one"):
        plots.save_bar_chart(tmp_path / "bad.png", {}, title="t", ylabel="y")


# ------------------------------------------------------------------- padded last eval batch


def tiny_predict_fn():
    """A flax Dense layer: inputs 'x' [B, 5] -> {'logits': [B, 2], 'score': [B]}."""
    import flax.linen as nn

    model = nn.Dense(2)
    variables = model.init(jax.random.key(0), np.zeros((1, 5), np.float32))

    def predict(variables, batch):
        logits = model.apply(variables, batch["x"])
        return {"logits": logits, "score": logits.sum(-1)}

    return predict, variables


@pytest.mark.parametrize("n", [13, 5, 16])
def test_predict_split_of_a_partial_last_batch_equals_one_unpadded_call(n):
    from jaxface.data.pipeline import ArraySource
    from jaxface.train import devices
    from jaxface.train.predict import Predictor

    mesh = devices.make_mesh()
    assert mesh.devices.size == 8  # the suite's 8 simulated devices: each holds one row of a batch of 8
    predict, variables = tiny_predict_fn()
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    ids = np.arange(100, 100 + n)
    predictor = Predictor(predict, variables, mesh, batch_size=8)
    out = predictor.predict_split(ArraySource({"x": x, "id": ids}), keep_inputs=("id",))
    reference = jax.device_get(jax.jit(predict)(variables, {"x": x}))  # all n rows at once, no padding
    assert set(out) == {"logits", "score", "id"}
    assert out["logits"].shape == (n, 2) and out["score"].shape == (n,)
    np.testing.assert_allclose(out["logits"], reference["logits"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["score"], reference["score"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["id"], ids)  # inputs kept alongside: the same n rows, in order
    # a limit stops at that example, inside a batch
    limited = predictor.predict_split(ArraySource({"x": x, "id": ids}), limit=n - 2, keep_inputs=("id",))
    np.testing.assert_array_equal(limited["id"], ids[:n - 2])
    np.testing.assert_allclose(limited["logits"], reference["logits"][:n - 2], rtol=1e-6, atol=1e-6)


def test_padded_rows_do_not_reach_the_metric():
    """The recipes compute metrics on `predict_split`'s outputs (multitask: `attribute_metric` against the
    split's labels; distill: AP against the kept ground truth). The last batch of 13 examples at batch 8 is
    padded with 3 copies of example 12, which is known and predicted right: counted, they would move the
    accuracy from 6/12 to 9/15."""
    from configs import multitask as multitask_config
    from jaxface.data.pipeline import ArraySource
    from jaxface.recipes import multitask
    from jaxface.train import devices
    from jaxface.train.predict import Predictor

    n = 13
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1], np.int32)
    right = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1], bool)  # rows 0-5 and 12 predicted right
    known = np.ones(n, np.float32)
    known[3] = 0.0  # a right prediction without a label: 6 right of 12 known
    predicted = np.where(right, labels, 1 - labels)
    logits_in = np.eye(2, dtype=np.float32)[predicted]  # one-hot of the predicted class
    predictor = Predictor(lambda variables, batch: {"logits": batch["x"] * variables["scale"]},
                          {"scale": np.float32(2.0)}, devices.make_mesh(), batch_size=8)
    out = predictor.predict_split(ArraySource({"x": logits_in, "gender": labels, "known": known}),
                                  keep_inputs=("gender", "known"))
    config = multitask_config.get_config("smoke")
    accuracy = multitask.attribute_metric(config, "gender", out["logits"], out["gender"], out["known"])
    assert accuracy == 50.0
    # and against the split's own labels, as multitask.evaluate does
    assert multitask.attribute_metric(config, "gender", out["logits"], labels, known) == 50.0


def test_detection_records_map_boxes_back_to_the_image_and_drop_low_scores():
    from jaxface.evaluation import detection_records

    boxes = np.array([[0.0, 0.5, 0.5, 1.0], [0.25, 0.25, 0.75, 0.75]], np.float32)  # [ymin, xmin, ymax, xmax]
    records = detection_records(boxes, np.array([0.9, 0.2]), np.array([1, 0]), ("fist", "point"),
                                score_threshold=0.3, top=10.0, left=0.0, side=100.0)
    # a 100-px square read from rows 10-110 of the image: box x 50-100, y 10-60
    assert records == [{"class": "point", "score": 0.9, "box_xyxy": [50.0, 10.0, 100.0, 60.0]}]
