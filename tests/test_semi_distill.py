"""Semi-supervised distillation (seed 004): crops, combined batches, the unlabeled part's labels, the
loss, the selection of student or teacher, config checks, and one smoke run of the whole recipe."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import semi_distill as semi_config
from jaxface.data import gesture_crops, samplers
from jaxface.data.pipeline import ArraySource
from jaxface.recipes import semi_distill
from jaxface.train import devices, driver, writers
from jaxface.train.state import TrainState


def smoke_config(**sections):
    """The smoke config with {section: {key: value}} overrides."""
    config = semi_config.get_config("smoke").unlock()
    for section, values in sections.items():
        config[section].update(values)
    return config.lock()


def crop_set(n=40, seed=0, size=16):
    """Constant images whose grey value is the example's id (weak views keep it: flip and edge shift)."""
    ids = np.arange(n)
    rng = np.random.default_rng(seed)
    return ArraySource({"image": np.broadcast_to(ids[:, None, None, None], (n, size, size, 3)).astype(np.uint8),
                        "label": rng.integers(0, 8, n).astype(np.int32), "id": ids.astype(np.int32)})


# --- data ----------------------------------------------------------------------------------------
def test_crops_cut_each_hand_of_each_scene_with_its_label():
    scenes = {"image_hr": np.zeros((2, 64, 64, 3), np.uint8), "num_hands": np.array([2, 1], np.int32),
              "boxes": np.array([[[0, 0, .5, .5], [.5, .5, 1, 1], [0] * 4], [[.25, .25, .75, .5], [0] * 4, [0] * 4]],
                                np.float32), "labels": np.array([[3, 5, -1], [7, -1, -1]], np.int32)}
    scenes["image_hr"][0, 32:, 32:] = 255  # the second hand's box is white, the first's black
    crops = gesture_crops.crop_hands(scenes, size=8, context=1.0)
    assert crops["image"].shape == (3, 8, 8, 3) and list(crops["label"]) == [3, 5, 7]
    assert list(crops["row"]) == [0, 0, 1] and list(crops["hand"]) == [0, 1, 0]
    assert crops["image"][0].mean() < 8 and crops["image"][1].mean() > 240  # (the filter blurs the border)


def test_labeled_indices_are_class_balanced_nested_and_seeded():
    labels = np.repeat(np.arange(8), 50)
    small, large = (gesture_crops.labeled_indices(labels, f, seed=0) for f in (0.1, 0.3))
    assert np.all(np.bincount(labels[small]) == 5) and np.all(np.bincount(labels[large]) == 15)
    assert set(small) <= set(large)
    assert not np.array_equal(small, gesture_crops.labeled_indices(labels, 0.1, seed=1))
    assert np.all(np.bincount(labels[gesture_crops.labeled_indices(labels, 0.001, 0)]) == 1)  # at least one per class


def test_batches_hold_b_l_labeled_and_mu_b_l_unlabeled_and_are_a_function_of_seed_and_step():
    config = smoke_config(train=dict(unlabeled_ratio=3))
    source = crop_set()
    labeled, unlabeled = gesture_crops.split_labeled(source, np.arange(0, 40, 4))
    b = semi_distill.batches(config, labeled, unlabeled)
    batch = b.local_batch(5)
    b_l, b_u = config.train.batch_size, config.train.batch_size * config.train.unlabeled_ratio
    assert {k: v.shape[0] for k, v in batch.items()} == {"labeled/image": b_l, "labeled/label": b_l,
                                                         "unlabeled/image": b_u, "unlabeled/image_strong": b_u}
    lab_ids, unl_ids = batch["labeled/image"][:, 0, 0, 0], batch["unlabeled/image"][:, 0, 0, 0]
    assert np.all(lab_ids % 4 == 0) and np.all(unl_ids % 4 != 0)  # each stream reads only its own part
    np.testing.assert_array_equal(batch["labeled/label"], source.arrays["label"][lab_ids])
    assert np.all(batch["labeled/image"] == batch["labeled/image"][:, :1, :1])  # weak view of a flat image: itself
    again = semi_distill.batches(config, labeled, unlabeled)
    for step in (0, 5, 17):
        jax.tree.map(np.testing.assert_array_equal, again.local_batch(step), b.local_batch(step))
    halves = [b.local_batch(5, p, 2) for p in (0, 1)]  # two processes read the halves of the same global batch
    jax.tree.map(lambda a, b_, c: np.testing.assert_array_equal(np.concatenate([a, b_]), c), *halves, batch)
    assert not np.array_equal(b.local_batch(6)["unlabeled/image"], batch["unlabeled/image"])
    # over an epoch of the labeled stream every labeled example is read equally often
    seen = np.concatenate([b.local_batch(s)["labeled/image"][:, 0, 0, 0] for s in range(5)])
    assert np.all(np.bincount(seen // 4, minlength=10) == 4)


@pytest.mark.parametrize("options", [
    dict(flip=1, shift=3, colour_jitter=0.4, noise=8.0, cutout=0.4),   # the default config's
    dict(flip=1, shift=0, colour_jitter=0.9, noise=0.0, cutout=1.5),   # mirror alone, cutout past the borders
    dict(flip=0, shift=9, colour_jitter=0.0, noise=3.0, cutout=0.0),   # shift past the side, no cutout
])
# 3.1M values in the larger batch: enough that a float32 value 1 ulp off (e.g. a per-image mean taken axis by
# axis) changes about 7 bytes of the output, where 20 x 7 x 7 x 3 would almost surely hide it
@pytest.mark.parametrize("n,size", [(20, 7), (64, 128)])
def test_batched_views_are_bit_identical_to_the_per_example_ones(options, n, size):
    images = np.random.default_rng(size).integers(0, 256, (n, size, size, 3)).astype(np.uint8)

    def rngs():
        return [samplers.example_rng(3, 4, i) for i in range(len(images))]

    views, weak = gesture_crops.augmenters(**options), {k: options[k] for k in ("flip", "shift")}
    labeled = views["labeled"]({"image": images}, rngs())
    assert np.array_equal(labeled["image"], np.stack([gesture_crops.weak_view(im, r, **weak)
                                                      for im, r in zip(images, rngs())]))
    unlabeled = views["unlabeled"]({"image": images}, rngs())
    pairs = [(gesture_crops.weak_view(im, r, **weak), gesture_crops.strong_view(im, r, **options))
             for im, r in zip(images, rngs())]  # today's order: the weak view's draws, then the strong view's
    for key, reference in (("image", [p[0] for p in pairs]), ("image_strong", [p[1] for p in pairs])):
        assert unlabeled[key].dtype == np.uint8 and np.array_equal(unlabeled[key], np.stack(reference)), key


def test_labels_of_the_unlabeled_part_never_reach_training():
    """Garbage labels on the unlabeled part: every batch of every arm is bit-identical, so is training
    (a step is a pure function of its batch)."""
    config, source = smoke_config(), crop_set()
    chosen = gesture_crops.labeled_indices(source.arrays["label"], 0.25, seed=0)
    garbage = dict(source.arrays, label=source.arrays["label"].copy())
    rest = np.setdiff1d(np.arange(40), chosen)
    garbage["label"][rest] = np.random.default_rng(1).integers(-1000, 1000, len(rest))
    clean, dirty = (semi_distill.batches(config, *gesture_crops.split_labeled(s, chosen))
                    for s in (source, ArraySource(garbage)))
    assert "label" not in gesture_crops.split_labeled(source, chosen)[1].arrays
    for step in range(12):
        jax.tree.map(np.testing.assert_array_equal, clean.local_batch(step), dirty.local_batch(step))


# --- the step ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kd_view", ["weak", "strong"])
def test_the_pseudo_label_step_computes_the_documented_loss_and_updates_both_networks(kd_view):
    # distinct weights, so a weight applied to the wrong term shows
    config = smoke_config(loss=dict(ce_weight=0.7, kd_weight=1.3, kd_back_weight=0.4, pl_weight=2.1, temperature=3.0,
                                    rampup_steps=4, kd_view=kd_view))
    mesh = devices.make_mesh(jax.devices()[:1])
    source = crop_set(seed=3)
    rng = np.random.default_rng(0)
    source.arrays["image"] = rng.integers(0, 256, source.arrays["image"].shape, dtype=np.uint8)
    batch = semi_distill.batches(config, *gesture_crops.split_labeled(source, np.arange(10))).local_batch(0)
    variables = {m: semi_distill._init(config, m, jax.random.key(i)) for i, m in enumerate(semi_distill.MODELS)}
    state = TrainState.create(variables=variables, tx={m: __import__("optax").sgd(0.1) for m in variables},
                              rng=jax.random.key(0))
    step = devices.compile_step(semi_distill.make_step(config, "semi_kd_pl"), mesh, donate=False)
    new, metrics, _ = step(devices.replicate(state, mesh), {}, devices.shard_batch(batch, mesh),
                           devices.stop_flags(mesh)[False])
    x = np.concatenate([batch["labeled/image"], batch["unlabeled/image"], batch["unlabeled/image_strong"]])
    n_l, n_w, w = len(batch["labeled/label"]), len(batch["labeled/label"]) + len(batch["unlabeled/image"]), config.loss
    z = {m: np.asarray(semi_distill.build(config, m, train=False).apply(
        variables[m], x, train=True, mutable=["batch_stats"])[0]) for m in variables}
    log_softmax = lambda a, t=1.0: jax.nn.log_softmax(jnp.asarray(a) / t)
    for m, other in (("student", "teacher"), ("teacher", "student")):
        ce = -np.mean(np.asarray(log_softmax(z[m][:n_l]))[np.arange(n_l), batch["labeled/label"]])
        p = np.exp(log_softmax(z[other][:n_w], w.temperature))
        own = np.concatenate([z[m][:n_l], z[m][n_w:]]) if kd_view == "strong" else z[m][:n_w]  # U: strong|weak
        kd = w.temperature ** 2 * np.mean(np.sum(p * (np.log(p) - log_softmax(own, w.temperature)), -1))
        q = np.exp(log_softmax(z[m][n_l:n_w]))  # pl_from='own'; threshold 0 in smoke: every one counts
        pl = -np.mean(np.asarray(log_softmax(z[m][n_w:]))[np.arange(n_w - n_l), q.argmax(-1)])
        for key, value in (("ce", ce), ("kd", kd), ("pl", pl)):
            assert float(metrics[f"{m}/{key}"]) == pytest.approx(float(value), rel=1e-4), (m, key)
        kd_weight = w.kd_weight if m == "student" else w.kd_back_weight
        ramp = np.exp(-5.0)  # r(0) = exp(-5 (1 - 0/4)^2)
        assert float(metrics[f"{m}/loss"]) == pytest.approx(
            float(w.ce_weight * ce + ramp * (kd_weight * kd + w.pl_weight * pl)), rel=1e-4)
        changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                               new.params[m], state.params[m])
        assert any(jax.tree.leaves(changed)), f"{m} was not updated"


# --- selection -----------------------------------------------------------------------------------
def rigged(config, model, favourite):
    """`model`'s variables predicting class `favourite` for every image (a huge output bias)."""
    v = jax.tree.map(np.asarray, semi_distill._init(config, model, jax.random.key(0)))
    v["params"]["head"]["bias"] = np.eye(8, dtype=np.float32)[favourite] * 1e4
    return v


@pytest.mark.parametrize("better", ["teacher", "student"])
def test_selection_keeps_the_better_network_by_validation_accuracy(better):
    config = smoke_config()
    labels = np.array([3] * 24 + [5] * 8, np.int32)
    data = {"validation": ArraySource({"image": np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), np.uint8),
                                       "label": labels})}
    models = {m: rigged(config, m, 3 if m == better else 5) for m in semi_distill.MODELS}
    stage = semi_distill.select_better("choose", [("co", m, semi_distill.make_predict(config, m))
                                                  for m in semi_distill.MODELS],
                                       semi_distill.validation(config, data, semi_distill.make_predict(config, "student")),
                                       export_as="model")
    decisions = []
    for mesh in (devices.make_mesh(jax.devices()[:1]), devices.make_mesh()):  # 1 or 8 devices: the same choice
        chosen, decision = stage.derive(lambda name: models, mesh)
        jax.tree.map(np.testing.assert_array_equal, chosen["model"], models[better])
        decisions.append(decision)
    assert decisions[0] == decisions[1]
    assert decisions[0]["chosen"] == f"co/{better}"
    worse = "student" if better == "teacher" else "teacher"
    assert decisions[0]["values"] == {f"co/{better}": 0.75, f"co/{worse}": 0.25}


@pytest.mark.parametrize("start", ["teacher_sup", "scratch"])
def test_the_co_trained_teacher_starts_from_the_supervised_teacher_or_at_random(start):
    config = smoke_config(train=dict(teacher_start=start))
    f = next(iter(config.data.label_fractions))
    unlabeled = ArraySource({k: v for k, v in crop_set(32).arrays.items() if k != "label"})
    stages = {s.name: s for s in semi_distill.make_stages(config, {"train": crop_set(), "validation": crop_set(8),
                                                                   f: (crop_set(8), unlabeled)})}
    supervised, loaded = rigged(config, "teacher", 1), []  # stands for teacher_sup's result
    for arm in semi_distill.CO_ARMS:
        started = stages[f"{arm}_{f}"].init(jax.random.key(0),
                                            lambda name: loaded.append(name) or {"teacher": supervised})
        teacher_bias = np.asarray(started["teacher"]["params"]["head"]["bias"])
        assert np.abs(np.asarray(started["student"]["params"]["head"]["bias"])).max() < 1  # the student: at random
        assert (teacher_bias[1] == 1e4) == (start == "teacher_sup")
    assert loaded == ([f"teacher_sup_{f}"] * 2 if start == "teacher_sup" else [])
    longer = smoke_config(train=dict(teacher_start=start, steps={**smoke_config().train.steps, "teacher_sup": 3}))
    changed = [a for a in semi_distill.CO_ARMS  # a warm start is re-run when teacher_sup changes; at random it is not
               if semi_distill.stage_fingerprint(longer, a, f) != semi_distill.stage_fingerprint(config, a, f)]
    assert changed == (list(semi_distill.CO_ARMS) if start == "teacher_sup" else [])


# --- config checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("loss.pl_from", "student", "config.loss.pl_from='student'; allowed: own, teacher"),
    ("loss.pl_threshold", 1.5, r"config.loss.pl_threshold=1.5 must be in \[0.0, 1.0\]"),
    ("loss.kd_weight", -1.0, "config.loss.kd_weight=-1.0 must be a finite number >= 0"),
    ("train.batch_size", 12, "config.train.batch_size=12 must be a multiple of the 8 devices"),
    ("data.builder_config", "lr32", "config.data.builder_config='lr32'; allowed: lr64, lr128, smoke"),
    ("train.unlabeled_ratio", 0, "config.train.unlabeled_ratio=0 must be an integer >= 1"),
    ("train.teacher_start", "kd_offline", "config.train.teacher_start='kd_offline'; allowed: scratch, teacher_sup"),
    ("loss.kd_view", "both", "config.loss.kd_view='both'; allowed: weak, strong"),
    ("models.compute_dtype", "fp8", "config.models.compute_dtype='fp8'; allowed: "),
])
def test_bad_config_values_raise_one_line_naming_the_key(key, value, message):
    config = semi_config.get_config("smoke").unlock()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message) as error:
        semi_distill.validate_config(config)
    assert "\n" not in str(error.value)
    config = semi_config.get_config("smoke").unlock()
    config.data.label_fractions = {"p100": 1.0}
    with pytest.raises(ValueError, match=r"config.data.label_fractions.p100=1.0 must be in"):
        semi_distill.validate_config(config)


# --- one smoke run of the whole recipe ----------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(gestures_data_dir, tmp_path_factory):
    teacher = dict(learning_rate=3e-3, weight_decay=1e-3)  # the teacher's own optimizer values, checked below
    config = smoke_config(data=dict(data_dir=gestures_data_dir), optimizer=dict(per_model={"teacher": teacher}))
    workdir = tmp_path_factory.mktemp("semi_distill_smoke")
    return workdir, driver.train_and_evaluate(semi_distill, config, str(workdir)), config


def test_smoke_run_trains_every_arm_selects_and_writes_results(smoke_run):
    workdir, results, config = smoke_run
    with open(workdir / "results.json") as f:
        saved = json.load(f)
    f = next(iter(config.data.label_fractions))
    stages = {r["stage"] for r in saved["rows"]}
    assert stages == {"student_full", "final", *(f"{a}_{f}" for a in semi_distill.ARMS),
                      *(f"{a}_select_{f}" for a in semi_distill.CO_ARMS)}
    for row in saved["rows"]:
        assert 0.0 <= row["val acc"] <= 1.0 and 0.0 <= row["test acc"] <= 1.0 and row["params"] > 0
    by = {(r["stage"], r["model"].split(" ")[0]): r for r in saved["rows"]}
    assert by["semi_kd_" + f, "teacher"]["params"] > by["semi_kd_" + f, "student"]["params"]  # a larger teacher
    for arm in semi_distill.CO_ARMS:  # the chosen network is the better by validation; its numbers are its own
        decision = saved["stages"][f"{arm}_select_{f}"]["decision"]
        values = decision["values"]
        assert decision["chosen"] == max(values, key=values.get) and decision["metric"] == "accuracy"
        chosen = decision["chosen"].split("/")[1]
        row = next(r for r in saved["rows"] if r["stage"] == f"{arm}_select_{f}")
        assert row["model"] == f"{chosen} (chosen)"
        assert row["val acc"] == pytest.approx(values[decision["chosen"]])
        assert row["test acc"] == by[f"{arm}_{f}", chosen]["test acc"]
    summary = saved["summary"]
    assert summary[f]["semi_kd"] == next(r["test acc"] for r in saved["rows"] if r["stage"] == f"semi_kd_select_{f}")
    assert summary["final_chosen"] == saved["stages"]["final"]["decision"]["chosen"]
    assert isinstance(summary[f]["claim_holds"], bool)
    md = (workdir / "results.md").read_text()
    assert md.startswith("# Semi-supervised distillation on gesture_crops/smoke")
    assert f"Claim: (seed 004) semi-supervised distillation beats the supervised student at {f}" in md
    final = next(r for r in saved["rows"] if r["stage"] == "final")  # the best of both arms' networks
    assert final["model"] == saved["stages"]["final"]["decision"]["chosen"].split("/")[1] + " (chosen)"
    assert (workdir / "validation_curves.png").exists() and (workdir / "loss_curves.png").exists()
    logged = writers.read_metrics(str(workdir))[f"semi_kd_pl_{f}"]
    assert {"student/pl", "teacher/pl", "student/kd", "teacher/kd", "student/pl_mask"} <= set(logged[1])
    assert "val/accuracy" in logged[config.train.steps.semi_kd_pl]
    # each network its own optimizer: the rate the second update used is each one's peak (warmup 1 in smoke)
    rates = {k: v for k, v in logged[2].items() if k.startswith("learning_rate")}
    assert rates == pytest.approx({"learning_rate/student": config.optimizer.learning_rate,
                                   "learning_rate/teacher": 3e-3})
    assert writers.read_metrics(str(workdir))[f"teacher_sup_{f}"][2]["learning_rate"] == pytest.approx(3e-3)


def test_the_final_model_predicts_image_files(smoke_run, gestures_data_dir):
    workdir, _, config = smoke_run
    crops = gesture_crops.load("smoke", "test", gestures_data_dir, size=40, limit=2)  # any size: resized
    out = semi_distill.predict_images(config, str(workdir), list(crops.arrays["image"]))
    assert len(out) == len(crops) and all(o["class"] in gesture_crops.CLASS_NAMES and 0 < o["score"] <= 1
                                          for o in out)
    assert semi_distill.input_format(config)["image"]["shape"] == [16, 16, 3]


# --- the IDX reader (fashion_mnist / mnist variants) --------------------------------------------
def write_idx(path, array):
    import gzip
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_the_idx_reader_reads_the_four_files_plain_or_gzipped_and_holds_out_validation(tmp_path):
    from jaxface.data import idx_images

    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28), np.uint8), rng.integers(0, 256, (7, 28, 28), np.uint8)
    labels = {"train": np.arange(30) % 10, "test": np.arange(7) % 10}
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels["train"])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte not found in .*apt install dataset-fashion"
                                                ".*--config.data.manual_dir=DIR"):
        idx_images.check_manual_dir("fashion_mnist", str(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels["test"])
    assert idx_images.check_manual_dir("mnist", str(tmp_path)) == str(tmp_path)
    np.testing.assert_array_equal(idx_images.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz")), train)
    splits = {s: idx_images.load(str(tmp_path), s, validation_size=6) for s in idx_images.SPLITS}
    assert [len(splits[s]) for s in idx_images.SPLITS] == [24, 6, 7]
    np.testing.assert_array_equal(splits["test"].arrays["image"][..., 1], test)  # grey -> RGB, same pixels
    np.testing.assert_array_equal(splits["test"].arrays["label"], labels["test"])
    # train and validation partition the training file, each image with its own label
    together = np.concatenate([splits["train"].arrays["image"], splits["validation"].arrays["image"]])[..., 0]
    found = [int(np.flatnonzero((train == im).all(axis=(1, 2)))[0]) for im in together]
    assert sorted(found) == list(range(30))
    np.testing.assert_array_equal(np.concatenate([splits[s].arrays["label"] for s in ("train", "validation")]),
                                  labels["train"][found])
    assert idx_images.load(str(tmp_path), "test", size=14).arrays["image"].shape == (7, 14, 14, 3)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels["test"][:5])
    with pytest.raises(ValueError, match="do not pair up"):
        idx_images.load(str(tmp_path), "test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels["test"])
    config = semi_config.get_config("fashion_mnist").unlock()
    config.data.manual_dir = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="fashion_mnist: train-images-idx3-ubyte, train-labels"):
        semi_distill.validate_config(config)
    config.data.manual_dir, config.data.validation_size = str(tmp_path), 6
    semi_distill.validate_config(config)
    data = semi_distill.load_data(config)  # the recipe reads the real-image variant like the crops
    assert data["test"].arrays["image"].shape == (7, 28, 28, 3) and len(semi_distill.class_names(config)) == 10
    assert "label" not in data["p1"][1].arrays and len(data["p1"][0]) + len(data["p1"][1]) == len(data["train"])
