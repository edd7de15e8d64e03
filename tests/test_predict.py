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
    variables = multitask.network_variables(multitask.largest_network_variables(config, seed_key(0)), heads, decoupling)
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
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={finished_run}",
                           *[image_files[n] for n in order]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
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
