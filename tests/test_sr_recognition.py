"""Joint super-resolution + face recognition (seed 001): degradations, models, the verification
protocol, the joint step, configuration errors, and one smoke run of the whole recipe."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs import sr_recognition as sr_config
from jaxface.data import degradations as deg
from jaxface.data import face_identities as fi
from jaxface.data.pipeline import ArraySource
from jaxface.data.samplers import IdentityBalancedBatches, example_rng
from jaxface.evaluation import verification as vf
from jaxface.losses import pairwise_margin_loss
from jaxface.models.super_resolution import FSRCNN, SRCNN, bicubic_upsample, depth_to_space
from jaxface.recipes import sr_recognition as recipe
from jaxface.train import checkpoints, devices, driver, loop
from jaxface.train.state import TrainState


def faces(n=6, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


# --- degradations --------------------------------------------------------------------------------
NOISY = deg.Degradation(factor=4, blur_sigma=(0.5, 2.0), noise_sigma=(1.0, 8.0), jpeg_quality=(30, 90))


def test_degradation_is_a_pure_function_of_seed_step_and_example():
    images = faces()
    first = deg.degrade_batch(images, NOISY, [example_rng(3, 7, i) for i in range(6)])
    again = deg.degrade_batch(images, NOISY, [example_rng(3, 7, i) for i in range(6)])
    assert first["lr"].shape == (6, 4, 4, 3) and first["lr_up"].shape == (6, 16, 16, 3)
    assert first["lr"].dtype == np.uint8 == first["lr_up"].dtype
    np.testing.assert_array_equal(first["lr"], again["lr"])
    # example 4 alone, degraded from its own generator, is what it was inside the batch
    alone = deg.degrade_batch(images[4:5], NOISY, [example_rng(3, 7, 4)])
    np.testing.assert_array_equal(alone["lr"][0], first["lr"][4])
    for other in (example_rng(3, 8, 4), example_rng(4, 7, 4), example_rng(3, 7, 5)):  # another step, seed, row
        assert not np.array_equal(deg.degrade_batch(images[4:5], NOISY, [other])["lr"][0], first["lr"][4])


def test_identity_batches_degrade_the_same_whatever_the_process_count():
    source = ArraySource({"image": faces(24), "identity": np.repeat(np.arange(6), 4).astype(np.int32)})
    batches = IdentityBalancedBatches(source, source.arrays["identity"], identities_per_batch=2, images_per_identity=4,
                                      seed=1, augment=deg.make_augment(NOISY))
    whole = batches.local_batch(5)
    halves = [batches.local_batch(5, p, 2) for p in (0, 1)]
    for key in ("image", "lr", "lr_up", "identity"):
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def test_degradation_steps_by_hand():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4] = 200  # one bright 4x4 block
    plain = deg.Degradation(factor=4, blur_sigma=(0.0, 0.0))
    lr = deg.degrade_image(image, plain, np.random.default_rng(0))
    np.testing.assert_array_equal(lr[..., 0], [[200, 0], [0, 0]])  # box average, no blur
    blurred = deg.gaussian_blur(np.full((5, 5, 1), 7.0), 1.0)
    np.testing.assert_allclose(blurred, 7.0, rtol=1e-6)  # normalised kernel, reflected borders
    assert deg.gaussian_blur(image, 1.0)[3, 3, 0] < 200 < 201  # blur spreads the edge
    with pytest.raises(ValueError, match=r"config.degradation.blur_sigma=\(2.0, 1.0\) must be a \(lo, hi\) pair"):
        deg.Degradation(blur_sigma=(2.0, 1.0))
    with pytest.raises(ValueError, match="config.degradation.jpeg_quality"):
        deg.Degradation(jpeg_quality=(0, 100))


def degrade_per_example(images, degradation, rngs):
    """The reference: `degrade_image` row by row, each result enlarged alone by Pillow's bicubic."""
    lr = np.stack([deg.degrade_image(im, degradation, r) for im, r in zip(images, rngs)])
    size = (images.shape[1],) * 2
    return {"lr": lr, "lr_up": np.stack([np.asarray(Image.fromarray(x).resize(size, Image.Resampling.BICUBIC))
                                         for x in lr])}


def test_batched_blur_is_bit_identical_to_the_per_example_blur():
    # mixed radii 0 (sigma 0: passed through), 1, 3 and 6, the largest longer than the 5-pixel side (reflected
    # twice); float values of both signs, so a -0 or a rounding difference would show in the bits
    x = np.random.default_rng(0).uniform(-300, 300, (6, 5, 7, 3)).astype(np.float32)
    sigmas = [0.0, 0.3, 2.0, 1.0, 0.0, 0.7]
    out = deg.gaussian_blur_batch(x, sigmas)
    assert out.dtype == np.float32
    for image, sigma, got in zip(x, sigmas, out):
        np.testing.assert_array_equal(got.view(np.uint32), deg.gaussian_blur(image, sigma).view(np.uint32))
    boxed = deg.box_downsample_batch(out[:, :4, :6], 2)  # the batch's block means: each image's, bit for bit
    for got, image in zip(boxed, out[:, :4, :6]):
        np.testing.assert_array_equal(got.view(np.uint32), deg.box_downsample(image, 2).view(np.uint32))


@pytest.mark.parametrize("n,factor,size,blur,noise,jpeg", [
    (24, 4, 16, (0.0, 2.0), (0.0, 0.0), (0, 0)),     # radii 1-6 in a batch, no noise, no JPEG
    (24, 4, 16, (0.0, 2.0), (0.0, 6.0), (30, 90)),   # noise and JPEG on
    (24, 3, 9, (0.2, 2.4), (1.0, 3.0), (0, 0)),      # odd sides, radius up to 8 on a 9-pixel side
    (24, 1, 5, (0.0, 0.0), (0.0, 2.0), (10, 95)),    # sigma 0 for every row, factor 1
    # 1.8M noisy values: enough that a float32 slip in the noise sum changes about 10 bytes of 'lr'
    (64, 1, 96, (0.0, 2.0), (0.0, 6.0), (0, 0)),
])
def test_batched_degradation_is_bit_identical_to_the_per_example_one(n, factor, size, blur, noise, jpeg):
    degradation = deg.Degradation(factor=factor, blur_sigma=blur, noise_sigma=noise, jpeg_quality=jpeg)
    images = faces(n, size, seed=factor)
    batched = deg.degrade_batch(images, degradation, [example_rng(1, 2, i) for i in range(n)])
    reference = degrade_per_example(images, degradation, [example_rng(1, 2, i) for i in range(n)])
    for key in ("lr", "lr_up"):
        assert batched[key].dtype == np.uint8 and np.array_equal(batched[key], reference[key]), key


def test_a_split_is_degraded_in_chunks_as_example_by_example():
    images = faces(deg._SPLIT_CHUNK + 20, 8, seed=5)
    split = deg.degrade_split(images, NOISY, seed=2, step=9)
    reference = degrade_per_example(images, NOISY, [example_rng(2, 9, i) for i in range(len(images))])
    for key in ("lr", "lr_up"):
        np.testing.assert_array_equal(split[key], reference[key])


# --- models --------------------------------------------------------------------------------------
def test_depth_to_space_places_channels_on_sub_pixels():
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)  # C = 2, f = 2: channel (i f + j) C + c
    y = depth_to_space(x, 2)
    assert y.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 2], [4, 6]])
    np.testing.assert_array_equal(y[0, :, :, 1], [[1, 3], [5, 7]])


def test_residual_sr_models_start_at_bicubic():
    lr = jnp.asarray(faces(2, 4))
    for model in (FSRCNN(factor=4, d=8, s=4, m=1), SRCNN(factor=4, n1=8, n2=4)):  # jitted: one compile each
        variables = jax.jit(model.init)(jax.random.key(0), lr)
        out = jax.jit(model.apply)(variables, lr)
        assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32
        np.testing.assert_allclose(out, bicubic_upsample(lr.astype(jnp.float32) / 255, 4), atol=1e-6)


def test_pair_loss_without_a_positive_pair():
    # unit vectors: d(0,1) = sqrt(2), d(0,2) = 2, d(1,2) = sqrt(2); margin 1.5, no two share an id
    e = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = ((1.5 - 2 ** 0.5) ** 2 * 2 + 0.0) / 3
    assert float(pairwise_margin_loss(e, jnp.array([0, 1, 2]), 1.5)) == pytest.approx(expected, rel=1e-5)


# --- verification and image quality --------------------------------------------------------------
def test_best_threshold_tar_at_far_and_roc_by_hand():
    d = np.array([0.1, 0.2, 0.5, 0.3, 0.6, 0.9])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    t, acc = vf.best_threshold(d, same)  # sorted: .1+ .2+ .3- .5+ .6- .9-: accept 2 -> 5/6
    assert (t, acc) == (pytest.approx(0.25), pytest.approx(5 / 6))
    assert vf.best_threshold(np.array([0.5, 0.5]), np.array([True, False]))[1] == 0.5  # cannot split a tie
    r = vf.tar_at_far(d, same, 1 / 3)  # one negative of 3 may pass: accept d < 0.6
    assert (r["tar"], r["far"], r["threshold"], r["resolvable"]) == (1.0, pytest.approx(1 / 3), 0.6, True)
    r = vf.tar_at_far(d, same, 0.1)  # below 1/3: no negative may pass: accept d < 0.3
    assert (r["tar"], r["far"], r["resolvable"]) == (pytest.approx(2 / 3), 0.0, False)
    far, tar, thresholds = vf.roc_curve(d, same)
    np.testing.assert_allclose(thresholds, [0.1, 0.2, 0.3, 0.5, 0.6, 0.9])
    np.testing.assert_allclose(tar, [1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(far, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_ten_fold_protocol_chooses_thresholds_on_the_other_folds():
    # fold k holds one positive (d = k) and one negative (d = 12 + k): every cut chosen on 9 folds separates
    # the 10th -> 100 % (integers, so every midpoint is exact)
    d = np.array([float(k) for k in range(10)] + [12.0 + k for k in range(10)])
    same = np.array([True] * 10 + [False] * 10)
    folds = np.tile(np.arange(10), 2)
    r = vf.kfold_accuracy(d, same, folds)
    assert r["mean"] == 1.0 and r["std"] == 0.0 and len(r["accuracies"]) == 10
    # move fold 9's positive to 11. Fold 9: the others' cut (8 + 12) / 2 = 10 rejects it -> 1/2. Fold 0: the
    # others' largest positive is 11, smallest negative 13 -> cut 12, which accepts fold 0's negative
    # (12 <= 12) -> 1/2. Every other fold: cut (11 + 12) / 2 -> 100 %.
    d[9] = 11.0
    r = vf.kfold_accuracy(d, same, folds)
    assert r["thresholds"][9] == 10.0 and r["thresholds"][0] == 12.0
    assert r["accuracies"] == [0.5] + [1.0] * 8 + [0.5]
    assert r["mean"] == pytest.approx(0.9) and r["std"] == pytest.approx(0.2)
    folds = vf.stratified_folds(same, 10, seed=0)
    assert all(((folds == k) & same).sum() == 1 == ((folds == k) & ~same).sum() for k in range(10))
    pairs, s = vf.balanced_pairs(np.array([0, 0, 0, 1, 1, 2]), seed=0)
    assert s.sum() == 4 == (~s).sum() and len({tuple(p) for p in pairs}) == 8 and (pairs[:, 0] < pairs[:, 1]).all()


def test_psnr_and_ssim_by_hand():
    x = np.full((1, 8, 8, 3), 100.0)
    assert vf.psnr(x, x + 1) == pytest.approx(10 * np.log10(255 ** 2))  # MSE 1
    assert vf.ssim(x, x) == pytest.approx(1.0)
    # constant images: only the luminance term, (2ab + C1) / (a^2 + b^2 + C1)
    c1 = (0.01 * 255) ** 2
    assert vf.ssim(x, np.full_like(x, 50.0)) == pytest.approx((2 * 100 * 50 + c1) / (100 ** 2 + 50 ** 2 + c1))


# --- the joint step ------------------------------------------------------------------------------
def test_a_joint_step_updates_sr_on_its_own_loss_then_the_recognizer_on_the_new_output():
    """One step on 8 devices equals, on one device holding the whole batch: an SGD step of SR on L_rec,
    then an SGD step of R on L_id over [HR, bicubic, SR_new(lr)]."""
    config = sr_config.get_config("smoke")
    sr_vars, rec_vars = (recipe.init_variables(config, m) for m in ("sr", "recognizer"))
    tx = {m: optax.sgd(0.5) for m in ("sr", "recognizer")}  # linear in the gradient: exact to compare
    state = TrainState.create(variables={"sr": sr_vars, "recognizer": rec_vars}, tx=tx, rng=jax.random.key(0))
    hr = faces(8, 16, seed=3)
    batch = {"image": hr, **deg.degrade_batch(hr, NOISY, [example_rng(0, 0, i) for i in range(8)]),
             "identity": np.repeat(np.arange(4), 2).astype(np.int32)}
    mesh = devices.make_mesh()
    step = devices.compile_step(recipe.make_step(config, "joint"), mesh, donate=False)
    new, metrics, _ = step(devices.replicate(state, mesh), {}, devices.shard_batch(batch, mesh),
                           devices.stop_flags(mesh)[False])
    assert int(new.step) == 1  # two updates, one step

    sr, rec = recipe.build_sr_net(config), recipe.build_recognizer(config, train=False)  # BN over the whole batch
    unit = lambda x: jnp.asarray(x, jnp.float32) / 255  # noqa: E731
    # references jitted: op-by-op autodiff compiles every primitive separately (slower than one program)
    g_sr = jax.jit(jax.grad(lambda p: jnp.mean(jnp.abs(sr.apply({"params": p}, batch["lr"]) - unit(hr)))))(
        sr_vars["params"])
    upd, _ = tx["sr"].update(g_sr, tx["sr"].init(sr_vars["params"]), sr_vars["params"])
    sr_new = optax.apply_updates(sr_vars["params"], upd)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), jax.device_get(new.params["sr"]), sr_new)
    @jax.jit
    def id_loss(p):
        merged = jnp.concatenate([unit(hr), unit(batch["lr_up"]), sr.apply({"params": sr_new}, batch["lr"])])
        emb, _ = rec.apply({"params": p, "batch_stats": rec_vars["batch_stats"]}, merged, train=True,
                                 mutable=["batch_stats"])
        return pairwise_margin_loss(emb, jnp.tile(batch["identity"], 3), config.loss.margin)

    loss, g_rec = jax.jit(jax.value_and_grad(id_loss))(rec_vars["params"])
    upd, _ = tx["recognizer"].update(g_rec, tx["recognizer"].init(rec_vars["params"]), rec_vars["params"])
    rec_new = optax.apply_updates(rec_vars["params"], upd)
    assert float(metrics["identity"]) == pytest.approx(float(loss), rel=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), jax.device_get(new.params["recognizer"]),
                 rec_new)


# --- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("model.sr.kind", "edsr", r"config.model.sr.kind='edsr'; allowed: fsrcnn, srcnn"),
    ("cascade_from", "hr_only", r"config.cascade_from='hr_only'; allowed: joint, joint_e2e"),
    ("loss.reconstruction", "l3", r"config.loss.reconstruction='l3'; allowed: l1, l2"),
    ("data.image_size", 18, r"config.data.image_size=18; allowed: \[8, 512\] and divisible by config.degradation.factor=4"),
    ("train.images_per_identity", 3, r"config.train.images_per_identity=3; allowed: an integer >= 2 dividing config.train.batch_size=8"),
    ("degradation.factor", 0, r"config.degradation.factor=0 must be an integer >= 1"),
])
def test_bad_config_values_are_refused_with_one_line(key, value, message):
    config = sr_config.get_config("smoke")
    section, _, leaf = key.rpartition(".")
    (config if not section else eval(f"config.{section}"))[leaf] = value
    with pytest.raises(ValueError, match=message) as e:
        recipe.validate_config(config)
    assert "\n" not in str(e.value)


# --- one smoke run of the whole recipe -----------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    config = sr_config.get_config("smoke")
    config.data.data_dir = str(tmp_path_factory.mktemp("faces_tfds"))
    workdir = tmp_path_factory.mktemp("sr_smoke")
    return workdir, driver.train_and_evaluate(recipe, config, str(workdir)), config


def test_smoke_run_writes_results_for_every_arm(smoke):
    workdir, results, config = smoke
    saved = json.load(open(workdir / "results.json"))
    assert [r["arm"] for r in saved["rows"]] == list(recipe.ARMS) and saved["summary"] == results["summary"]
    for row in saved["rows"]:
        for t in vf.PAIR_TYPES:
            assert 0 <= row[f"{t} acc %"] <= 100 and row[f"{t} ±"] >= 0
        assert row["images/s"] > 0 and row["PSNR dB"] > 0 and -1 <= row["SSIM"] <= 1
    rows = {r["arm"]: r for r in saved["rows"]}
    joint, plain = rows["(c) joint SR + recognizer (seed)"], rows["(a) HR only"]
    assert joint["params"] > plain["params"] and joint["PSNR dB"] != plain["PSNR dB"]  # SR's own image quality
    gap = joint["LR-LR acc %"] - max(rows["(a) HR only"]["LR-LR acc %"], rows["(b) HR + LR, no SR"]["LR-LR acc %"])
    assert saved["summary"]["lr_lr_gap_vs_best_baseline"] == pytest.approx(gap)
    assert saved["stages"]["cascade"]["decision"] == {"from": "joint"}
    assert len(saved["verification"]["joint"]["LR-LR"]["accuracies"]) == config.eval.num_folds
    for name in ("results.md", "roc_lr_lr.png", "sr_faces.png"):
        assert os.path.getsize(workdir / name) > 0, name
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    steps = {s: sorted(line["step"] for line in lines if line["stage"] == s) for s in recipe.TRAINED}
    assert steps["joint"] == [1, 2, 3]  # two updates per step, one step counted
    joint_line = next(line for line in lines if line["stage"] == "joint_e2e")
    assert {"reconstruction", "identity", "identity_into_sr"} <= set(joint_line)


def test_the_exported_cascade_is_sr_then_recognizer_and_predicts(smoke, tmp_path):
    workdir, _, config = smoke
    cascade = checkpoints.load_exported(str(workdir), *recipe.EXPORT[:1], [recipe.EXPORT[1]])["cascade"]
    parts = checkpoints.load_exported(str(workdir), "joint", ["sr", "recognizer"])
    lr = deg.degrade_batch(faces(4, 16), NOISY, [example_rng(0, 0, i) for i in range(4)])["lr"]
    out = jax.jit(recipe.cascade_predict(config))(cascade, {"lr": lr})
    sr, rec = recipe.build_sr_net(config), recipe.build_recognizer(config, train=False)  # the two models one after
    expected = jax.jit(lambda p: rec.apply(p["recognizer"], sr.apply(p["sr"], lr), train=False))(parts)  # the other
    np.testing.assert_allclose(out["embedding"], expected, atol=1e-5)
    info = driver.export_run(recipe, config, str(workdir), str(tmp_path / "export"))
    assert info["stage"] == "cascade" and info["input"]["lr"]["shape"] == [4, 4, 3]
    predicted = recipe.predict_images(config, str(workdir), [faces(1, 37)[0], faces(1, 16, seed=2)[0]])
    assert [p["embedding_norm"] for p in predicted] == [pytest.approx(1.0, abs=1e-4)] * 2
    assert len(predicted[0]["embedding"]) == config.model.recognizer.embed_dim


def test_predict_verify_prints_the_distance_and_the_verdict_at_the_validation_threshold(smoke, tmp_path, capsys):
    from PIL import Image

    from experiments import predict

    workdir, results, _ = smoke
    paths = []
    for name, image in (("a.png", faces(1, 37)[0]), ("b.png", faces(1, 16, seed=2)[0])):
        Image.fromarray(image).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    assert predict.main([f"--workdir={workdir}", "--verify", *paths]) == 0
    verdict = json.loads(capsys.readouterr().out.strip())
    run_config, run_recipe = predict.load_run(str(workdir))
    embeddings = [np.array(p["embedding"])
                  for p in run_recipe.predict_images(run_config, str(workdir), [predict.read_image(p) for p in paths])]
    assert verdict["distance"] == pytest.approx(np.linalg.norm(embeddings[0] - embeddings[1]), abs=1e-4)
    assert verdict["threshold"] == pytest.approx(results["verify"]["threshold"], abs=1e-5)
    assert verdict["same"] == (verdict["distance"] <= verdict["threshold"])
    assert predict.main([f"--workdir={workdir}", "--verify", paths[0]]) == 2
    assert "compares exactly two images; got 1" in capsys.readouterr().err
    # the super-resolved faces, written on request (else dropped, saying so once)
    assert predict.main([f"--workdir={workdir}", f"--image_dir={tmp_path / 'sr'}", *paths]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [os.path.basename(line["restored_png"]) for line in lines] == ["a.restored.png", "b.restored.png"]
    size = run_config.data.image_size
    assert all(np.asarray(Image.open(line["restored_png"])).shape == (size, size, 3) for line in lines)
    assert predict.main([f"--workdir={workdir}", *paths]) == 0
    captured = capsys.readouterr()
    assert "restored" not in captured.out and captured.err.count("--image_dir=DIR writes them") == 1


def test_a_rerun_with_another_config_is_refused(smoke):
    workdir, _, config = smoke
    changed = config.copy_and_resolve_references()
    changed.loss.margin = 0.5
    with pytest.raises(loop.ConfigChangedError):
        driver.train_and_evaluate(recipe, changed, str(workdir))


def test_evaluating_on_validation_reads_the_held_out_identities_never_the_test_ones(smoke, tmp_path, monkeypatch):
    workdir, _, config = smoke
    read, load = [], fi.load_identities
    monkeypatch.setattr(fi, "load_identities", lambda name, split, *args: read.append(split) or load(name, split, *args))
    chosen = config.copy_and_resolve_references()
    chosen.data.eval_split = "validation"
    data = recipe.load_data(chosen)
    assert read == ["train"] and data["test"] is data["val"]  # the test split is not even opened
    assert set(data["val"].arrays["identity"]) == set(range(9, 12))  # the last 3 of 12 training identities
    driver.evaluate_run(recipe, config, str(workdir), split="validation", out_dir=str(tmp_path))
    md = (tmp_path / "results.md").read_text()
    assert md.splitlines()[0].endswith("4x LR, validation identities") and "3 validation identities never" in md
    assert "test" not in read


def test_lfw_people_are_split_by_name_and_frames_cut_to_the_face(monkeypatch):
    """The `lfw` variant's data path on a fake prepared source with LFW's features (250x250 'image',
    'label' = the person's name as bytes): people, never images, are split; the face square is kept."""

    names = [f"Person_{i // 3:02d}" for i in range(120)]  # 40 people x 3 images, in file order
    fake = []
    for i, name in enumerate(names):
        frame = np.full((250, 250, 3), 255, np.uint8)
        frame[50:200, 50:200] = i  # the centred 150x150 square: the face
        fake.append({"image": frame, "label": name.encode()})
    monkeypatch.setattr(fi, "open_lfw", lambda data_dir: fake)
    config = sr_config.get_config("lfw")
    config.data.image_size = 32
    recipe.validate_config(config)
    splits = fi.identity_splits(config.data)
    people = {p: set(splits[p]["identity"].tolist()) for p in ("train", "val", "test")}
    assert all(people.values()) and not (people["train"] & people["val"] or people["train"] & people["test"]
                                         or people["val"] & people["test"])
    assert sum(len(splits[p]["identity"]) for p in splits) == 120
    number = {name: i for i, name in enumerate(sorted(set(names)))}
    for p, split in splits.items():
        for identity in split["identity"]:
            name = sorted(set(names))[identity]
            assert fi.lfw_part(name) == p and number[name] == identity
        assert split["image"].shape[1:] == (32, 32, 3)
        # every pixel comes from the face square (one grey level per image), none from the frame (255)
        assert np.all(split["image"] == split["image"][:, :1, :1]) and split["image"].max() < 255
    data = recipe.load_data(config)
    assert data["test"].arrays["lr"].shape[1:] == (8, 8, 3) and len(data["train"]) == len(splits["train"]["image"])
