"""Seed 002 (mutual cross-supervision from boxes): labels, losses, metrics, and one smoke run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.data import box_labels as bl
from jaxface.data import synthetic_cells
from jaxface.evaluation import segmentation as seg
from jaxface.losses import masked_pixel_cross_entropy, soft_dice_loss


# --- weak labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("box", [(2, 3, 12, 6), (0, 0, 1, 1), (5, 1, 7, 30), (1, 4, 31, 6), (3, 3, 20, 17),
                                 (10, 8, 18, 9), (0, 0, 32, 32)])
def test_ellipse_stays_inside_its_box_and_touches_all_four_sides(box):
    y0, x0, y1, x1 = box
    m = bl.ellipse_mask(box, (32, 32))
    assert not (m & ~bl.box_mask(box, (32, 32))).any()
    assert m[y0].any() and m[y1 - 1].any() and m[:, x0].any() and m[:, x1 - 1].any()
    ry, rx = (y1 - y0) / 2, (x1 - x0) / 2
    if min(ry, rx) >= 4:  # a real ellipse, not the box: area within one perimeter of pi ry rx
        assert abs(m.sum() - np.pi * ry * rx) < 2 * np.pi * max(ry, rx)
        assert not m[y0, x0] and not m[y1 - 1, x1 - 1]  # corners stay out


def test_weak_labels_background_outside_boxes_ignore_between_touching_ellipses():
    boxes = np.array([[4, 2, 14, 12], [4, 12, 14, 22]])  # side by side, touching at column 12
    labels, ignore = bl.weak_labels(boxes, 2, (20, 26))
    outside = ~(bl.box_mask(boxes[0], (20, 26)) | bl.box_mask(boxes[1], (20, 26)))
    far = outside & ~ndilate(~outside, 2)
    assert (labels[far] == 0).all() and not ignore[far].any()  # background, trained on
    assert ignore[9, 11] and ignore[9, 12]  # the dividing line between the two ellipses
    assert labels[9, 10] == labels[9, 13] == 2 and not ignore[9, 10] and not ignore[9, 13]  # boundary beside it
    overlapping = np.array([[4, 2, 14, 14], [4, 10, 14, 22]])  # an overlap is split along a dividing line
    labels, ignore = bl.weak_labels(overlapping, 2, (20, 26))
    assert ignore[9, 11] and ignore[9, 12] and labels[9, 10] == labels[9, 13] == 2
    assert seg.instances_from_classes(np.where(ignore, 2, labels)).max() == 2
    assert labels[9, 6] == 1 and not ignore[9, 6]  # interior of the first
    assert labels[4, 7] == 2 and not ignore[4, 7]  # top rim: boundary
    assert ignore[3, 7]  # just outside the ellipse edge


def ndilate(mask, n):
    from scipy import ndimage
    return ndimage.binary_dilation(mask, iterations=n)


def test_gt_labels_mark_boundaries_between_touching_instances():
    inst = np.zeros((8, 8), np.uint8)
    inst[1:7, 1:4], inst[1:7, 4:7] = 1, 2
    g = bl.gt_labels(inst)
    assert g[3, 3] == 2 and g[3, 4] == 2 and g[3, 2] == 1 and g[3, 5] == 1 and g[0, 0] == 0
    assert seg.instances_from_classes(g).max() == 2  # the boundary separates them


def test_fusion_rule_on_a_toy_case():
    shape = (16, 16)
    boxes = np.array([[2, 2, 10, 10], [11, 11, 16, 16]])
    weak, weak_ignore = bl.weak_labels(boxes, 2, shape)
    probs = np.full((*shape, 3), [0.8, 0.1, 0.1])  # confident background everywhere ...
    probs[2:10, 2:10] = [0.05, 0.9, 0.05]          # ... confident interior filling box 1 (corners too)
    probs[0, 0] = [0.0, 1.0, 0.0]                  # confident nucleus outside every box
    probs[5, 5] = [0.4, 0.35, 0.25]                # unconfident inside box 1
    labels, ignore = bl.fuse(weak, weak_ignore, boxes, 2, probs, confidence=0.7, min_box_foreground=0.3)
    assert labels[0, 0] == 0 and not ignore[0, 0]           # 1. outside boxes: background
    assert labels[2, 2] == 1 and not ignore[2, 2] and weak[2, 2] == 0  # 2. confident: the prediction
    assert labels[5, 5] == weak[5, 5] == 1                  # 3. unconfident: the weak label
    box2 = bl.box_mask(boxes[1], shape)                     # 4. box 2's nucleus missed: weak labels kept
    assert np.array_equal(labels[box2], weak[box2]) and np.array_equal(ignore[box2], weak_ignore[box2])
    assert (weak[box2] > 0).any()


def test_fusion_keeps_dividing_lines_between_touching_boxes_when_asked():
    shape, boxes = (20, 26), np.array([[4, 2, 14, 12], [4, 12, 14, 22]])
    weak, weak_ignore = bl.weak_labels(boxes, 2, shape)
    merged = np.zeros((*shape, 3))
    merged[..., 0] = 1
    merged[4:14, 2:22] = [0, 1, 0]  # the model merges the two nuclei into one confident blob
    rule = dict(confidence=0.7, min_box_foreground=0.3)
    labels, ignore = bl.fuse(weak, weak_ignore, boxes, 2, merged, **rule)
    assert labels[9, 11] == labels[9, 10] == 1 and not ignore[9, 11]  # rules 1-4: the merge is taught
    labels, ignore = bl.fuse(weak, weak_ignore, boxes, 2, merged, keep_dividing_lines=True, **rule)
    assert ignore[9, 11] and ignore[9, 12] and labels[9, 10] == labels[9, 13] == 2  # rule 5: still two nuclei
    assert labels[4, 2] == 1 and not ignore[4, 2]  # the box corner still follows the prediction


# --- losses --------------------------------------------------------------------------------------
def test_masked_cross_entropy_ignored_pixels_get_zero_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    labels, ignore = rng.integers(0, 3, (2, 4, 4)), rng.random((2, 4, 4)) < 0.4
    loss, grad = jax.jit(jax.value_and_grad(masked_pixel_cross_entropy))(logits, labels, ignore)
    grad = np.asarray(grad)
    assert np.all(grad[ignore] == 0) and np.all(np.abs(grad[~ignore]).sum(-1) > 0)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, ce[~ignore].mean(), rtol=1e-5)
    loss_fn = jax.jit(masked_pixel_cross_entropy)
    relabelled = np.where(ignore, (labels + 1) % 3, labels)  # labels under the mask do not matter
    assert loss_fn(logits, relabelled, ignore) == loss
    assert loss_fn(logits, labels, np.ones_like(ignore)) == 0


def test_masked_losses_average_over_the_global_batch_when_split():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 3, 3))
    ignore = rng.random((4, 3, 3)) < np.array([0.1, 0.1, 0.9, 0.9])[:, None, None]  # uneven counts per device
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    split = lambda x: x.reshape(2, 2, *x.shape[1:])  # noqa: E731
    for fn, args in ((masked_pixel_cross_entropy, (logits, labels, ignore)),
                     (soft_dice_loss, (probs, labels, ~ignore))):
        per_device = jax.jit(jax.vmap(lambda *a, fn=fn: fn(*a, axis_name="d"), axis_name="d"))(*map(split, args))
        np.testing.assert_allclose(per_device.mean(), jax.jit(fn)(*args), rtol=1e-6)


def test_soft_dice_hand_computed():
    probs = jnp.array([[[[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]]]])  # [1, 1, 3, 2]
    targets = jnp.array([[[0, 1, 1]]])
    mask = jnp.array([[[True, True, False]]])
    # class 0: p = (0.8, 0.3), t = (1, 0): (2*0.8 + 1) / (1.1 + 1 + 1); class 1: p = (0.2, 0.7), t = (0, 1)
    expected = 1 - ((2 * 0.8 + 1) / (1.1 + 1 + 1) + (2 * 0.7 + 1) / (0.9 + 1 + 1)) / 2
    np.testing.assert_allclose(soft_dice_loss(probs, targets, mask), expected, rtol=1e-6)


# --- metrics -------------------------------------------------------------------------------------
def test_dsb_average_precision_on_a_known_case():
    gt = np.zeros((20, 20), np.int32)
    gt[0:4, 0:4], gt[10:15, 0:10] = 1, 2
    pred = np.zeros_like(gt)
    pred[0:4, 0:4] = 1                   # exact: a match at every threshold
    pred[10:15, 0:6], pred[10, 6] = 2, 2  # 31 of 50 pixels: IoU 0.62, a match at 0.5 and 0.55 and 0.6 only
    pred[17:19, 17:19] = 3               # a false positive
    iou = seg.iou_matrix(gt, pred)
    np.testing.assert_allclose(iou.max(1), [1.0, 0.62])
    # t in {0.5, 0.55, 0.6}: TP 2, FP 1, FN 0 -> 2/3; the other 7 thresholds: TP 1, FP 2, FN 1 -> 1/4
    assert seg.dsb_score(iou) == pytest.approx((3 * 2 / 3 + 7 / 4) / 10)
    classes = (pred > 0).astype(np.int32)
    m = seg.segmentation_metrics(classes[None], gt[None])
    assert m["ap"] == pytest.approx((3 * 2 / 3 + 7 / 4) / 10) and m["mean_iou"] == pytest.approx(0.81)
    assert m["fg_iou"] == pytest.approx(47 / 70) and seg.dsb_score(np.zeros((0, 0))) == 1.0


def test_synthetic_cells_are_deterministic_with_tight_boxes():
    a, b = (synthetic_cells.generate_example("train", 3, size=64, count_range=(8, 20)) for _ in range(2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    n = int(a["num_cells"])
    assert 1 <= n <= 20 and set(np.unique(a["instances"])) == set(range(n + 1))
    for k, (y0, x0, y1, x1) in enumerate(a["boxes"][:n], start=1):
        ys, xs = np.nonzero(a["instances"] == k)
        assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (y0, x0, y1, x1)
    assert not a["boxes"][n:].any()


# --- the recipe ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """configs/mutual.py:smoke trained and evaluated once on 8 devices, with a fusion confidence just
    above uniform so that the rounds' labels really come from the models: (workdir, results, config)."""
    from configs import mutual as mutual_config
    from jaxface.recipes import mutual
    from jaxface.train import driver

    config = mutual_config.get_config("smoke")
    config.data.data_dir = str(tmp_path_factory.mktemp("cells_tfds"))
    config.fusion.confidence, config.fusion.min_box_foreground = 0.34, 0.0
    workdir = tmp_path_factory.mktemp("mutual_smoke")
    return workdir, driver.train_and_evaluate(mutual, config, str(workdir)), config


def test_smoke_run_writes_every_arm_and_round(smoke):
    workdir, results, config = smoke
    saved = json.loads((workdir / "results.json").read_text())
    stages = {(r["stage"], r["model"]) for r in saved["rows"]}
    assert stages == {("boxes", "a"), ("full", "a"), ("round0", "a"), ("round0", "b"), ("ellipse_r1", "a"),
                      ("self_r1", "a"), ("mutual_r1", "a"), ("mutual_r1", "b")}
    for r in saved["rows"]:
        assert 0 <= r["AP@[.5:.95]"] <= 1 and 0 <= r["fg IoU"] <= 1 and r["params"] > 0
    assert saved["stages"]["final"]["decision"] == {"from": "mutual_r1"}
    assert set(saved["summary"]["final_ap"]) == {"ellipse", "self", "mutual"}
    assert saved["summary"]["label_ap"]["gt"] > 0.9  # the decoding recovers ground-truth instances
    for name in ("ap_per_round.png", "fg_iou_per_round.png", "overlays.png", "loss_curves.png", "results.md"):
        assert (workdir / name).stat().st_size > 0


def test_mutual_rounds_train_on_the_other_models_predictions(smoke):
    """mutual_r1's labels for a are the weak labels fused with round0's b, and the reverse; self_r1's
    with round0's a. Fails if the arms are wired to the wrong model."""
    from jaxface.recipes import mutual
    from jaxface.train import devices, loop
    from jaxface.train.predict import Predictor

    workdir, _, config = smoke
    data = mutual.load_data(config)
    stages = {s.name: s for s in mutual.make_stages(config, data)}
    store = loop.StageStore(str(workdir), list(stages.values()))
    t, rule = data["train"].arrays, dict(config.fusion.to_dict(), kind=config.labels.shape)

    def fused_from(model):
        predictor = Predictor(mutual.probs_fn(config, model), store.load("round0")[model], devices.make_mesh(), 8)
        probs = predictor.predict_split(data["train"], transform=lambda b: {"image": b["image"]})["probs"]
        return bl.fuse_split(t["weak"], t["weak_ignore"], t["boxes"], t["num_cells"], probs, **rule)[0]

    from_a, from_b = fused_from("a"), fused_from("b")
    assert not np.array_equal(from_a, from_b) and not np.array_equal(from_a, t["weak"])
    labels = lambda stage, m: stages[stage].resolve_data(store.load).source.arrays[f"label_{m}"]  # noqa: E731
    assert np.array_equal(labels("mutual_r1", "a"), from_b) and np.array_equal(labels("mutual_r1", "b"), from_a)
    assert np.array_equal(labels("self_r1", "a"), from_a)
    assert np.array_equal(labels("ellipse_r1", "a"), t["weak"])


def test_predict_counts_instances_on_images_of_any_size(smoke):
    """Through overlapping tiles (the smoke config's tile is smaller than the image), exactly as one pass."""
    from jaxface.recipes import mutual

    workdir, _, config = smoke
    assert config.eval.tile < 45  # the 45 x 61 image goes through overlapping tiles
    image = np.random.default_rng(0).integers(0, 60, (45, 61, 3)).astype(np.uint8)
    image[10:20, 10:20] = 200
    small, large = mutual.predict_images(config, str(workdir), [image[:20, :20], image])
    from jaxface.train import checkpoints

    variables = checkpoints.load_exported(str(workdir), *mutual.EXPORT[:1], [mutual.EXPORT[1]])[mutual.EXPORT[1]]
    gray = np.pad(image.mean(-1).round().astype(np.uint8), ((0, 1), (0, 1)), mode="edge")  # one pass, no tiles
    from jaxface.evaluation.tiling import predict_tiled

    apply = jax.jit(mutual.probs_fn(config, "a"))
    probs = lambda x: np.asarray(apply(variables, {"image": x})["probs"])  # noqa: E731
    whole = probs(gray[None, ..., None])[0]
    tiled = lambda margin: predict_tiled(probs, gray[..., None], config.eval.tile, margin, align=2)  # noqa: E731
    np.testing.assert_allclose(tiled(config.eval.tile_margin), whole, atol=1e-5)  # the trained U-Net, stitched
    assert not np.allclose(tiled(0), whole, atol=1e-5)  # without margins the seams show
    classes = whole.argmax(-1)[:45, :61]
    mask = large.pop("mask")
    np.testing.assert_array_equal(mask, seg.instances_from_classes(classes))  # the instance labels, at the image's size
    assert large == {"instances": int(mask.max()), "foreground_fraction": round(float((classes > 0).mean()), 4)}
    assert small["instances"] >= 0 and 0 <= small["foreground_fraction"] <= 1 and small["mask"].shape == (20, 20)


def test_predict_cli_writes_an_instance_mask_png_per_image_into_the_workdir(smoke, tmp_path, capsys):
    """No flag: <workdir>/predictions/<name>.mask.png, uint8 labels equal to predict_images' mask; 16-bit
    inputs read as in training (percentiles) and at full size (wider than predict.MAX_SIDE)."""
    from PIL import Image

    from experiments import predict
    from jaxface.data import cell_folder
    from jaxface.recipes import mutual

    workdir, _, config = smoke
    rng = np.random.default_rng(3)
    image = rng.integers(0, 60, (40, 1100)).astype(np.uint8)
    image[8:20, 8:20] = 220
    Image.fromarray(image).save(tmp_path / "cells.png")
    deep = image.astype(np.uint16) * 16 + 300  # a 12-bit camera in a 16-bit file
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    assert predict.main([f"--workdir={workdir}", str(tmp_path / "cells.png"), str(tmp_path / "deep.tif")]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert "into " + str(workdir / "predictions") in out.err
    expected = mutual.predict_images(config, str(workdir), [np.repeat(x[..., None], 3, -1) for x in (
        image, cell_folder.to_gray_uint8(deep))])
    for line, name, want in zip(lines, ("cells", "deep.tif"), expected):  # predict.draw_file_names
        assert line["mask_png"] == str(workdir / "predictions" / f"{name}.mask.png")
        with Image.open(line["mask_png"]) as png:
            assert png.mode == "L" and png.size == (1100, 40)  # full size, not downscaled to MAX_SIDE
            np.testing.assert_array_equal(np.asarray(png), want["mask"])
        assert line["instances"] == want["instances"] == int(want["mask"].max())


@pytest.mark.parametrize("key, value, message", [
    ("rounds", 0, "config.rounds=0"), ("labels.shape", "circle", "config.labels.shape='circle'"),
    ("fusion.confidence", 1.5, "config.fusion.confidence=1.5"),
    ("fusion.min_box_foreground", -0.1, "config.fusion.min_box_foreground=-0.1"), ("labels.edge_width", 9, "edge_width"),
    ("models.a", dict(widths=(4, 8, 16, 32, 64, 128, 256), initializer="he_normal"), "config.models.a.widths"),
    ("models.b", dict(widths=(4,), initializer="zeros"), "config.models.b.initializer='zeros'")])
def test_bad_config_values_raise_one_line(key, value, message):
    from configs import mutual as mutual_config
    from jaxface.recipes import mutual

    config = mutual_config.get_config("smoke")
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        mutual.validate_config(config)
    assert "\n" not in str(e.value)


# --- your own data: a folder + COCO boxes ------------------------------------------------------
def _write_folder(root, *, annotations=None):
    from PIL import Image

    root.mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    inst = np.zeros((40, 70), np.uint8)
    inst[5:15, 5:20], inst[20:35, 50:66] = 1, 2
    Image.fromarray((inst > 0).astype(np.uint8) * 200).save(root / "a.png")
    Image.fromarray((inst > 0).astype(np.uint16) * 3000 + 500).save(root / "b.tif")  # 16-bit
    for name in ("a.png", "b.tif"):
        Image.fromarray(inst).save(root / "masks" / name)
    default = {"images": [{"id": 1, "file_name": "a.png", "width": 70, "height": 40},
                          {"id": 2, "file_name": "b.tif", "width": 70, "height": 40}],
               "annotations": [{"image_id": i, "bbox": b} for i in (1, 2) for b in ([5, 5, 15, 10], [50, 20, 16, 15])]}
    (root / "annotations.json").write_text(annotations if isinstance(annotations, str) else
                                           json.dumps(annotations or default))
    return default


def test_folder_reader_tiles_images_boxes_and_masks(tmp_path):
    from jaxface.data import cell_folder

    _write_folder(tmp_path)
    out = cell_folder.load_folder(str(tmp_path), 32, 40)
    assert out["has_masks"] and out["image"].shape == (2 * 2 * 3, 32, 32, 1)  # 2 x 3 overlapping tiles per image
    first = out["boxes"][0][:out["num_cells"][0]]  # tile (0, 0) of a.png holds box 1 whole
    assert first.tolist() == [[5, 5, 15, 20]]
    assert set(np.unique(out["instances"][0])) == {0, 1}
    assert out["image"][6:].max() == 255 and out["image"][6:].min() == 0  # 16-bit: percentile-normalised


@pytest.mark.parametrize("case, message", [
    ("bad_json", r"annotations.json: not valid JSON \(.* at line 1"),
    ("missing_key", r"annotations.json: images\[0\] has no 'width'"),
    ("unknown_image", r"annotations.json: annotations\[0\] names image_id 99, which is not in 'images'"),
    ("box_outside", r"annotations.json: annotations\[1\] bbox \[50, 20, 30, 15\] lies outside its image a.png"),
    ("missing_image", r"a.png: image file is missing"),
    ("unreadable_image", r"a.png: cannot read image"),
    ("wrong_size", r"a.png: is 70x40, its entry in annotations.json says 71x40")])
def test_folder_reader_names_file_and_entry_of_malformed_input(tmp_path, case, message):
    from jaxface.data import cell_folder

    good = _write_folder(tmp_path)
    if case == "bad_json":
        _write_folder(tmp_path, annotations='{"images": [')
    elif case == "missing_key":
        del good["images"][0]["width"]
    elif case == "unknown_image":
        good["annotations"][0]["image_id"] = 99
    elif case == "box_outside":
        good["annotations"][1]["bbox"] = [50, 20, 30, 15]
    elif case == "missing_image":
        (tmp_path / "a.png").unlink()
    elif case == "unreadable_image":
        (tmp_path / "a.png").write_bytes(b"not a png")
    elif case == "wrong_size":
        good["images"][0]["width"] = 71
    if case in ("missing_key", "unknown_image", "box_outside", "wrong_size"):
        (tmp_path / "annotations.json").write_text(json.dumps(good))
    with pytest.raises(cell_folder.FolderDataError, match=message) as e:
        cell_folder.load_folder(str(tmp_path), 32, 40)
    assert "\n" not in str(e.value)


def test_folder_config_is_checked_before_anything_runs(tmp_path):
    from configs import mutual as mutual_config
    from jaxface.data import cell_sets
    from jaxface.recipes import mutual

    _write_folder(tmp_path, annotations='{"images": 3, "annotations": []}')
    config = mutual_config.get_config("smoke")
    config.data.name, config.data.path, config.data.image_size = "folder", str(tmp_path), 32
    with pytest.raises(ValueError, match="needs lists 'images' and 'annotations'"):
        mutual.validate_config(config)
    _write_folder(tmp_path)
    mutual.validate_config(config)
    split = cell_sets.load_split(config.data, config.labels, "train")
    assert split["weak"].shape == split["instances"].shape == (12, 32, 32) and split["gt"].max() == 2


def _polygon_folder(root, polygons=None):
    """a.png (40 x 70) with two boxes and their COCO polygons, no masks/: (annotations, expected instances)."""
    from PIL import Image

    root.mkdir(exist_ok=True)
    Image.fromarray(np.full((40, 70), 30, np.uint8)).save(root / "a.png")
    polygons = polygons or [[[5, 5, 19, 5, 19, 14, 5, 14]], [[50, 20, 64, 20, 64, 34], [50, 30, 52, 30, 52, 34, 50, 34]]]
    boxes = [[5, 5, 15, 10], [50, 20, 16, 15]]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 70, "height": 40}],
            "annotations": [{"image_id": 1, "bbox": b, "segmentation": p} for b, p in zip(boxes, polygons)]}
    (root / "annotations.json").write_text(json.dumps(data))
    expected = np.zeros((40, 70), np.int32)
    expected[5:15, 5:20] = 1  # vertices are pixel centres, the outline is inside: columns 5-19, rows 5-14
    for y in range(20, 35):   # the triangle (50, 20), (64, 20), (64, 34): centres on its diagonal are inside
        expected[y, 50 + y - 20:65] = 2
    expected[30:35, 50:53] = 2  # and its second polygon: the same instance
    return data, expected


def test_folder_reader_rasterises_coco_polygons_as_ground_truth(tmp_path):
    from jaxface.data import cell_folder

    _, expected = _polygon_folder(tmp_path)
    records, has_gt = cell_folder.read_folder(str(tmp_path), 32)
    assert has_gt and records[0]["instances"].shape == (40, 70)
    np.testing.assert_array_equal(records[0]["instances"], expected)
    tiles = cell_folder.load_folder(str(tmp_path), 32, 40)
    assert tiles["has_masks"] and set(np.unique(tiles["instances"])) == {0, 1, 2}
    np.testing.assert_array_equal(tiles["instances"][0], expected[:32, :32])  # tile (0, 0)


@pytest.mark.parametrize("polygon, message", [
    ([[5, 5, 19, 5, 19]], r"annotations\[0\] segmentation\[0\] has an odd number of coordinates \(5\)"),
    ([[5, 5, 19, 5]], r"annotations\[0\] segmentation\[0\] has 2 point\(s\); a polygon needs at least 3"),
    ([[5, 5, 19, 5, 19, 14], [5, 5, 80, 5, 19, 14]], r"annotations\[0\] segmentation\[1\] reaches \(5..80, 5..14\), "
                                                     r"outside its image a.png \(70x40\)"),
    ({"counts": "abc", "size": [40, 70]}, r"annotations\[0\] segmentation is RLE \(counts, size\); only polygons"),
    ([[5, 5, "x", 5, 19, 14]], r"annotations\[0\] segmentation\[0\] holds a value that is not a number"),
    ([5, 5, 19, 5, 19, 14], r"annotations\[0\] segmentation is not a list of polygons"),
    (None, r"annotations\[1\] has no 'segmentation', but annotations\[0\] has")])
def test_folder_reader_names_file_and_entry_of_malformed_polygons(tmp_path, polygon, message):
    from jaxface.data import cell_folder

    data, _ = _polygon_folder(tmp_path)
    if polygon is None:
        del data["annotations"][1]["segmentation"]
    else:
        data["annotations"][0]["segmentation"] = polygon
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(cell_folder.FolderDataError, match=r"annotations.json: " + message) as e:
        cell_folder.read_annotations(str(tmp_path))
    assert "\n" not in str(e.value)


def test_folder_training_uses_random_crops_that_are_a_pure_function_of_seed_step_and_example(tmp_path):
    """Crops of the whole 40 x 70 images at offsets spread over every position (fixed tiles would only start at
    x in {0, 32, 38}), the same batch for the same (seed, step) however it is split over processes, labels
    cut with their image."""
    from configs import mutual as mutual_config
    from jaxface.data import cell_folder, cell_sets

    _write_folder(tmp_path)
    config = mutual_config.get_config("smoke")
    config.data.name, config.data.path, config.data.image_size = "folder", str(tmp_path), 32
    train = cell_sets.load_split(config.data, config.labels, "train", training=True)
    assert train["image"].shape == (2, 64, 96, 1) and train["extent"].tolist() == [[40, 70]] * 2
    assert train["weak"].shape == (2, 64, 96) and train["num_cells"].tolist() == [2, 2]  # labels of whole images
    labels = {"label_a": train["weak"], "ignore_a": train["weak_ignore"]}
    batches = cell_sets.train_batches(config.data, train, labels, 4, seed=5)
    again = cell_sets.train_batches(config.data, train, labels, 4, seed=5)
    offsets = []
    for step in range(12):
        batch, indices = batches.local_batch(step), batches.indices(step)
        assert batch["image"].shape == (4, 32, 32, 1) and set(batch) == {"image", "label_a", "ignore_a"}
        assert all(np.array_equal(batch[k], again.local_batch(step)[k]) for k in batch)  # (seed, step) -> batch
        halves = [batches.local_batch(step, p, 2) for p in (0, 1)]
        assert all(np.array_equal(np.concatenate([h[k] for h in halves]), batch[k]) for k in batch)
        step_offsets = cell_folder.crop_offsets(5, step, np.arange(4), train["extent"][indices], 32)
        for i, (y, x) in zip(indices, step_offsets):
            assert 0 <= y <= 40 - 32 and 0 <= x <= 70 - 32  # inside the image, never in the canvas padding
        for k, full in (("image", train["image"]), ("label_a", train["weak"])):
            np.testing.assert_array_equal(batch[k], [full[i, y:y + 32, x:x + 32] for i, (y, x) in zip(indices, step_offsets)])
        offsets.extend(map(tuple, step_offsets))
    assert len(set(offsets)) > 30 and len({x for _, x in offsets}) > 15  # random, not a fixed tile grid
    other = cell_sets.train_batches(config.data, train, labels, 4, seed=6)
    assert not np.array_equal(other.local_batch(0)["image"], batches.local_batch(0)["image"])


def test_fusion_predictions_on_large_canvases_go_through_full_batches_of_stitched_tiles():
    """cell_sets.predict_probs: canvases larger than the tile are predicted through overlapping tiles, always
    in full batches (compiled once), and equal one pass over the whole canvas; small ones in one pass."""
    from jaxface.data import cell_sets

    class BoxSum:  # a Predictor of a toy model: 5 x 5 box sum, receptive-field radius 2
        batch_size, calls = 4, []

        def __call__(self, batch):
            x = batch["image"].astype(np.int64)
            self.calls.append(x.shape)
            p = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
            return {"probs": sum(p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(5) for j in range(5))}

        def predict_split(self, source):
            return self({"image": source.arrays["image"]})

    images = np.random.default_rng(0).integers(0, 256, (3, 48, 80, 1))
    model = BoxSum()
    whole = model({"image": images})["probs"]
    model.calls.clear()
    np.testing.assert_array_equal(cell_sets.predict_probs(model, images, 16, 4, 2), whole)
    assert model.calls and all(shape == (4, 16, 16, 1) for shape in model.calls)
    assert not np.array_equal(cell_sets.predict_probs(model, images, 16, 0, 2), whole)  # no margin: seams
    model.calls.clear()
    np.testing.assert_array_equal(cell_sets.predict_probs(model, images, 80, 4, 2), whole)
    assert model.calls == [(3, 48, 80, 1)]


# --- tiling --------------------------------------------------------------------------------------
def test_tiled_prediction_is_exact_on_a_toy_model():
    from jaxface.evaluation.tiling import predict_tiled

    image = np.random.default_rng(0).integers(0, 256, (53, 70, 1))

    def smooth(x):  # integer 5 x 5 box sum with zero padding: receptive-field radius 2, no rounding
        p = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        return sum(p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(5) for j in range(5))

    whole = smooth(image[None])[0]
    assert np.array_equal(predict_tiled(smooth, image, tile=16, margin=2), whole)
    assert not np.array_equal(predict_tiled(smooth, image, tile=16, margin=1), whole)  # margin below the radius
    with pytest.raises(ValueError, match="multiples of 2"):  # a pooling network needs aligned tiles
        predict_tiled(smooth, image, tile=16, margin=2, align=2)
