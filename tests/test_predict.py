"""experiments/predict.py: JSON lines for readable images, one stderr line per unreadable file."""

import json
import os
import subprocess
import sys

import numpy as np
import optax
import pytest
from PIL import Image

from configs import multitask as multitask_config
from experiments import predict
from jaxface.data import synthetic_faces as sf
from jaxface.data import synthetic_gestures
from jaxface.evaluation import plots
from jaxface.models.attributes import network_variables
from jaxface.recipes import multitask
from jaxface.train.checkpoints import StageCheckpoints
from jaxface.train.loop import seed_key
from jaxface.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A workdir as experiments.run leaves it: config.json and a finished final stage (an untrained
    network is enough to test reading files and the output format)."""
    workdir = tmp_path_factory.mktemp("predict_run")
    config = multitask_config.get_config("smoke")
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
    heads, decoupling = multitask.stage_models(config)[multitask.FINAL_STAGE]["net"]
    variables = network_variables(multitask.largest_network_variables(config, seed_key(0)), heads, decoupling)
    state = TrainState.create(variables={"net": variables}, tx={"net": optax.sgd(0.1)}, rng=seed_key(1))
    ckpt = StageCheckpoints(str(workdir / "checkpoints" / multitask.FINAL_STAGE), save_every_steps=1, keep=1)
    ckpt.save(state, force=True)
    ckpt.mark_done({"stage": multitask.FINAL_STAGE})
    ckpt.close()
    return workdir


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """{name: path} of good and bad inputs."""
    folder = tmp_path_factory.mktemp("images")
    face = sf.render_face(sf.sample_identity(0, 1), sf.sample_example(np.random.default_rng(0), sf.sample_identity(0, 1), 1))
    files = {}

    def path(name):
        files[name] = str(folder / name)
        return files[name]

    Image.fromarray(face).save(path("face.png"))
    Image.fromarray(face).convert("L").save(path("grey.png"))
    Image.fromarray(face).convert("RGBA").save(path("alpha.png"))
    Image.fromarray(face[..., 1].astype(np.uint16) * 257).save(path("grey16.png"))
    Image.fromarray(face).resize((2500, 1800)).save(path("large.jpg"), quality=80)
    Image.new("1", (12000, 10000)).save(path("absurd.png"))  # 120 Mpx, a few kB on disk
    open(path("empty.png"), "wb").close()
    with open(path("notes.txt"), "w") as f:
        f.write("not an image")
    with open(files["face.png"], "rb") as f:
        data = f.read()
    with open(path("truncated.png"), "wb") as f:
        f.write(data[: len(data) // 3])
    os.mkdir(path("folder.png"))
    files["missing.png"] = str(folder / "missing.png")
    return files


GOOD = ("face.png", "grey.png", "alpha.png", "grey16.png", "large.jpg")
BAD = {"absurd.png": "pixels is outside", "empty.png": "empty file", "notes.txt": "not an image",
       "truncated.png": "truncated", "folder.png": "folder without image files", "missing.png": "no such file"}


def test_read_image_gives_8_bit_rgb_of_bounded_size(image_files):
    for name in GOOD:
        image = predict.read_image(image_files[name])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3, name
        assert max(image.shape[:2]) <= predict.MAX_SIDE, name
    height, width = predict.read_image(image_files["large.jpg"]).shape[:2]
    assert width == predict.MAX_SIDE and abs(height - 1800 * predict.MAX_SIDE / 2500) <= 1
    grey16 = predict.read_image(image_files["grey16.png"])
    face = np.asarray(Image.open(image_files["face.png"]).convert("RGB"))
    np.testing.assert_allclose(grey16[..., 0], face[..., 1], atol=1)  # 16-bit range scaled back to 8 bits
    for name, message in BAD.items():
        with pytest.raises(predict.UnreadableImage, match=message):
            predict.read_image(image_files[name])


def test_cli_predicts_good_files_and_names_each_bad_one(finished_run, image_files):
    order = ["face.png", "missing.png", "grey.png", "notes.txt", "alpha.png", "empty.png", "grey16.png",
             "truncated.png", "large.jpg", "folder.png", "absurd.png"]
    draw_dir = finished_run / "drawn"  # attributes only: nothing to draw, said once, no folder made
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={finished_run}",
                           f"--draw_dir={draw_dir}", *[image_files[n] for n in order]],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.count("nothing to draw") == 1 and not draw_dir.exists(), proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == [image_files[n] for n in order if n in GOOD]
    heads = set(multitask.HEADS)
    for line in lines:
        assert set(line) == {"file"} | heads
        assert line["gender"]["label"] in ("female", "male") and 0.5 <= line["gender"]["probability"] <= 1.0
        assert line["quality"]["label"] in sf.QUALITY_NAMES
        assert isinstance(line["age"], float) and set(line["pose"]) == {"yaw", "pitch", "roll"}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(BAD), proc.stderr[-2000:]
    for name, message in BAD.items():
        assert any(image_files[name] in e and message in e for e in errors), (name, errors)
    assert "Traceback" not in proc.stderr


def test_cli_refuses_a_workdir_without_a_run(tmp_path, image_files):
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={tmp_path}",
                           image_files["face.png"]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "config.json not found" in proc.stderr and "Traceback" not in proc.stderr


def test_exif_orientation_is_applied_and_folders_expand_to_their_images(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: view rotated 90 degrees clockwise
    Image.fromarray(wide).save(tmp_path / "b_turned.jpg", exif=exif, quality=95)
    Image.fromarray(wide).save(tmp_path / "a_plain.png")
    (tmp_path / "notes.txt").write_text("not an image")
    turned = predict.read_image(str(tmp_path / "b_turned.jpg"))
    assert turned.shape == (40, 20, 3)  # as displayed: tall, with the white half on top
    assert turned[:20].mean() > 200 and turned[20:].mean() < 50
    assert predict.read_image(str(tmp_path / "a_plain.png")).shape == (20, 40, 3)
    assert predict.expand_folders([str(tmp_path), "x.png"]) == [
        str(tmp_path / "a_plain.png"), str(tmp_path / "b_turned.jpg"), "x.png"]


def test_draw_detections_outlines_each_box_in_its_class_colour_at_the_images_size(tmp_path):
    image = np.full((60, 80, 3), 128, np.uint8)
    detections = [{"class": "fist", "score": 0.91, "box_xyxy": [10.0, 20.0, 50.0, 40.0]},
                  {"class": "palm", "score": 0.4, "box_xyxy": [-5.0, -5.0, 200.0, 200.0]}]  # clipped to the image
    drawn = plots.draw_detections(image, detections, class_names=["fist", "palm"])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert np.all(image == 128)  # the input is left as it was
    # the class colours are the detection grid's, by the class's index in class_names
    fist, palm = (tuple(round(c * 255) for c in plots.PREDICTION_COLOURS[i][:3]) for i in (0, 1))
    for y, x in [(30, 10), (30, 49), (39, 30)]:  # left, right and bottom edge of the fist box
        assert tuple(drawn[y, x]) == fist, (y, x)
    for y, x in [(30, 9), (30, 50), (40, 30), (30, 30)]:  # just outside, and inside below its label
        assert tuple(drawn[y, x]) == (128, 128, 128), (y, x)
    assert tuple(drawn[59, 40]) == palm and tuple(drawn[40, 79]) == palm  # bottom and right image edge
    label = drawn[20:28, 10:40]  # "fist 0.91": white text on the class colour inside the top-left corner
    assert np.any(np.all(label > 200, axis=-1)) and np.any(np.all(label == fist, axis=-1))  # (anti-aliased)
    path = plots.save_detections_image(tmp_path / "sub" / "x.png", image, detections, class_names=["fist", "palm"])
    np.testing.assert_array_equal(np.asarray(Image.open(path)), drawn)


def test_draw_file_names_keep_inputs_of_the_same_name_apart():
    names = predict.draw_file_names(["a/x.jpg", "b/x.jpg", "c/y.png", "d/Y.PNG", "z.png", "z.png", "w.jpeg"])
    assert names == ["a__x.jpg.png", "b__x.jpg.png", "c__y.png", "d__Y.PNG", "z.png", "z-2.png", "w.jpeg.png"]
    assert len({n.casefold() for n in names}) == len(names)


def test_cli_draws_each_images_boxes_into_draw_dir(distill_smoke_run, tmp_path):
    workdir, _ = distill_smoke_run
    # the finished run's checkpoints with score_threshold 0, so that every image has boxes to draw
    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((workdir / "config.json").read_text())
    config["eval"]["score_threshold"] = 0.0
    (run / "config.json").write_text(json.dumps(config))
    (run / "checkpoints").symlink_to(workdir / "checkpoints")
    inputs = []
    for index, name in enumerate(["a/x.png", "b/x.png", "c/turned.jpg"]):
        (tmp_path / name).parent.mkdir()
        image = Image.fromarray(synthetic_gestures.generate_example("test", index, lr_size=64)["image_hr"][:, :96])
        exif = Image.Exif()
        if name.endswith(".jpg"):
            exif[0x0112] = 6  # shown turned: 96 wide x 128 high -> 128 wide x 96 high
        image.save(tmp_path / name, exif=exif, quality=95)
        inputs.append(str(tmp_path / name))
    draw_dir = tmp_path / "drawn"
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={run}", f"--draw_dir={draw_dir}",
                           *inputs], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == inputs and all(set(line) == {"file", "detections"} for line in lines)
    assert sorted(os.listdir(draw_dir)) == ["a__x.png", "b__x.png", "turned.jpg.png"]
    classes = sorted({d["class"] for line in lines for d in line["detections"]})
    for line, name in zip(lines, ["a__x.png", "b__x.png", "turned.jpg.png"]):
        assert line["detections"], line
        seen = predict.read_image(line["file"])  # the oriented pixels the boxes are given in
        drawn = np.asarray(Image.open(draw_dir / name))
        assert drawn.shape == seen.shape == ((96, 128, 3) if name.startswith("turned") else (128, 96, 3))
        np.testing.assert_array_equal(drawn, plots.draw_detections(seen, line["detections"], class_names=classes))
        assert np.any(drawn != seen)
    assert "Traceback" not in proc.stderr


def test_cli_refuses_a_draw_dir_that_is_a_file(finished_run, image_files, tmp_path):
    existing = tmp_path / "results.png"
    existing.write_bytes(b"keep me")
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={finished_run}",
                           f"--draw_dir={existing}", image_files["face.png"]],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: --draw_dir={existing} is an existing file, not a folder"]
    assert existing.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["results.png"]


def test_label_map_pngs_are_8_bit_up_to_255_instances_else_16_bit(tmp_path):
    few, many = np.zeros((6, 7), np.int32), np.zeros((6, 7), np.int32)
    few[1:3, 1:3], many[0, 0], many[5, 6] = 255, 1, 300
    predictions = [{"instances": 255, "mask": few}, {"instances": 300, "mask": many}]
    assert predict.save_image_outputs(str(tmp_path), ["a.png", "b.tif"], predictions) == 0
    for prediction, labels, mode in zip(predictions, (few, many), ("L", "I;16")):
        assert "mask" not in prediction
        with Image.open(prediction["mask_png"]) as png:
            assert png.mode == mode
            np.testing.assert_array_equal(np.asarray(png).astype(np.int32), labels)  # exact round trip
    bad = [{"mask": np.full((2, 2), 70000, np.int32)}]
    assert predict.save_image_outputs(str(tmp_path), ["c.png"], bad) == 1 and "mask_png" not in bad[0]


def test_a_recipe_can_read_its_inputs_at_full_size_with_16_bit_percentiles(tmp_path):
    """READ_IMAGES options: max_side=None keeps the size; percentiles map the 1st / 99.8th to 0 / 255."""
    from jaxface.data import cell_folder

    deep = (np.arange(30 * 1300).reshape(30, 1300) % 4000 + 200).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    full = predict.read_image(str(tmp_path / "deep.tif"), max_side=None, percentiles=cell_folder.PERCENTILES)
    assert full.shape == (30, 1300, 3)
    np.testing.assert_array_equal(full[..., 0], cell_folder.to_gray_uint8(deep))  # as the training data
    default = predict.read_image(str(tmp_path / "deep.tif"))
    assert default.shape[1] == predict.MAX_SIDE and default.max() <= round(4199 / 65535 * 255) + 1
