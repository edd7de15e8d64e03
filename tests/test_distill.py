"""The distillation recipe end to end on its smoke config, and the run entry point's error handling."""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.results_table import formatted


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_config_trains_all_stages_and_writes_results(distill_smoke_run):
    tmp_path, results = distill_smoke_run
    saved = json.load(open(tmp_path / "results.json"))
    assert [r["stage"] for r in saved["rows"]] == [
        "teacher_big", "teacher_hr", "student", "student_kd_big", "student_kd_hr", "student_kd_both"]
    rows = {r["stage"]: r for r in saved["rows"]}
    assert rows["teacher_big"]["params"] >= 4 * rows["student"]["params"]
    assert rows["teacher_hr"]["input"] == "128x128" and rows["student"]["input"] == "64x64"
    for row in saved["rows"]:
        assert 0.0 <= row["mAP@0.5"] <= 1.0 and row["images/s"] > 0
    assert results["summary"] == saved["summary"]
    for name in ("results.md", "loss_curves.png", "detections_student.png", "detections_student_kd_both.png"):
        assert os.path.getsize(tmp_path / name) > 0
    # distillation stages logged their per-teacher terms
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    both = [l for l in lines if l["stage"] == "student_kd_both"]
    assert len(both) == 6 and {"feature_big", "feature_hr", "head_big", "head_hr", "task"} <= set(both[0])


def test_results_md_holds_the_results_table_and_the_claim(distill_smoke_run):
    workdir, _ = distill_smoke_run
    saved = json.load(open(workdir / "results.json"))
    md = (workdir / "results.md").read_text()
    columns = ["stage", "model", "params", "input", "mAP@0.5", "images/s"]
    assert saved["columns"] == columns
    table = ("| stage | model | params | input | mAP@0.5 | images/s |\n|---|---|---|---|---|---|\n"
             + "".join("| " + " | ".join(formatted(row[c]) for c in columns) + " |\n" for row in saved["rows"]))
    head = "# Two-teacher distillation on synthetic_gestures/smoke\n\n" + table
    assert md.startswith(head), md
    # one row per stage, in training order, e.g. '| student | student | 12,345 | 64x64 | 0.1234 | 567.8 |'
    lines = md.splitlines()
    assert [l.split(" | ")[0] for l in lines[4:10]] == [
        "| teacher_big", "| teacher_hr", "| student", "| student_kd_big", "| student_kd_hr", "| student_kd_both"]
    notes = md[len(head):].strip("\n").split("\n\n")
    rows = {r["stage"]: r for r in saved["rows"]}
    student, both = rows["student"]["mAP@0.5"], rows["student_kd_both"]["mAP@0.5"]
    judged = saved["summary"]["claims"]["student_kd_both_vs_student"]
    assert judged["gain"] == pytest.approx(both - student) and judged["seeds"] == 1
    verdict = "higher" if both > student else "NOT higher"
    assert notes[0] == (f"Claim: (seed 003) the two-teacher student beats the student alone "
                        f"(mAP@0.5: {both:.4f} vs {student:.4f}) -> {verdict} on this one seed; a verdict "
                        f"against the seed-to-seed spread needs config.num_seeds >= 3.")
    assert set(saved["summary"]["claims"]) == {"student_kd_both_vs_student", "student_kd_both_vs_student_kd_big",
                                               "student_kd_both_vs_student_kd_hr"}
    assert len(notes) == 4 and notes[3].startswith("Split 'test'; images/s = jitted inference at batch 16 on 8 device(s)")


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_help_lists_every_recipe_with_its_config_variants():
    import importlib

    from jaxface.recipes import RECIPES

    proc = run_cli("--help")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    help_lines = proc.stdout.splitlines()
    assert "  distill (configs/distill.py: default, smoke, lr128)" in help_lines, proc.stdout
    # every registered recipe, with every config file in configs/ that selects it and that file's VARIANTS
    listed = {}
    for file in sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py") and f[0] != "_"):
        module = importlib.import_module(f"configs.{file[:-3]}")
        recipe = module.get_config(module.VARIANTS[0]).recipe
        listed.setdefault(recipe, []).append(f"configs/{file}: {', '.join(module.VARIANTS)}")
    assert set(listed) == set(RECIPES)
    for recipe, configs in listed.items():
        assert f"  {recipe} ({'; '.join(configs)})" in help_lines, proc.stdout


def test_every_config_refuses_a_misspelt_key_from_python():
    """A notebook user gets the CLI's guarantee: a typo raises instead of silently adding a key."""
    for file in sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py") and f[0] != "_"):
        module = importlib.import_module(f"configs.{file[:-3]}")
        for variant in module.VARIANTS:
            config = module.get_config(variant)
            with pytest.raises(AttributeError, match="batch_sise"):
                config.train.batch_sise = 8
            config.train.batch_size = 8  # existing keys stay settable


@pytest.mark.parametrize("override, message", [
    ("--config.train.batch_sise=8", "batch_sise"),
    ("--config.train.batch_size=abc", "batch_size"),
    ("--config.train.batch_size=-8", "config.train.batch_size=-8 must be a finite number > 0"),
    ("--config.optimizer.learning_rate=nan", "config.optimizer.learning_rate=nan must be a finite number > 0"),
    ("--config.optimizer.weight_decay=inf", "config.optimizer.weight_decay=inf must be a finite number >= 0"),
    ("--config.optimizer.name=lamb", "config.optimizer.name='lamb'; allowed: adamw, adam, sgd"),
    ("--config.num_seeds=0", "config.num_seeds=0 must be an integer >= 1"),
    ("--config.train.batch_size=12", "not divisible by the 8 devices"),
    ("--config.data.builder_config=lr32", "allowed: lr64, lr128, smoke"),
    ("--config.data.name=celeb_b", "config.data.name='celeb_b' is not a data set TFDS knows (did you mean 'celeb_a'?)"),
    ("--config.teachers.big_checkpoint=/nonexistent/run", "config.teachers.big_checkpoint: /nonexistent/run does not exist"),
    ("--config.train.steps.student=2", "config.train.steps.student=2 must be more than config.optimizer.warmup_steps=2 "
                                       "(warmup, then at least one step of the schedule)"),
])
def test_bad_configuration_fails_with_one_line_and_writes_nothing(tmp_path, override, message):
    workdir = tmp_path / "run"
    proc = run_cli("--config=configs/distill.py:smoke", f"--workdir={workdir}", override)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr[-2000:]
    assert not workdir.exists()


def test_teachers_from_an_earlier_run_are_checked_against_the_config(distill_smoke_run, tmp_path):
    from configs import distill as distill_config
    from jaxface.recipes import distill

    reference_dir, _ = distill_smoke_run
    config = distill_config.get_config("smoke")
    config.teachers.big_checkpoint = str(reference_dir)  # a workdir ...
    config.teachers.hr_checkpoint = str(reference_dir / "checkpoints" / "teacher_hr")  # ... or the stage itself
    distill.validate_config(config)
    assert [s.name for s in distill.make_stages(config, {"train": [None]})] == [
        "student", "student_kd_big", "student_kd_hr", "student_kd_both"]

    config.models.teacher_big = dict(config.models.teacher_big, widths=(8, 16, 32))
    with pytest.raises(ValueError, match=r"config.teachers.big_checkpoint: parameter teacher_big\[.*\] is \(\d+,.*\) "
                                         r"in the checkpoint but .* in the config"):
        distill.validate_config(config)

    config = distill_config.get_config("smoke")
    config.teachers.hr_checkpoint = str(tmp_path)  # exists, but holds no finished teacher_hr
    with pytest.raises(FileNotFoundError, match="config.teachers.hr_checkpoint: .* holds no finished 'teacher_hr'"):
        distill.validate_config(config)


@pytest.mark.parametrize("env, message", [
    ({"JAXFACE_DISTRIBUTED": "yes"}, "JAXFACE_DISTRIBUTED='yes'; allowed: 1"),
    ({"JAXFACE_COORDINATOR_ADDRESS": "localhost:1234", "JAXFACE_NUM_PROCESSES": "two", "JAXFACE_PROCESS_ID": "0"},
     "$JAXFACE_NUM_PROCESSES='two' must be an integer"),
])
def test_bad_distributed_settings_fail_with_one_line_and_write_nothing(tmp_path, env, message):
    workdir = tmp_path / "run"
    proc = run_cli("--config=configs/distill.py:smoke", f"--workdir={workdir}", env=env)
    assert proc.returncode == 2 and f"error: {message}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_rerun_with_a_changed_config_is_refused_and_the_record_kept(distill_smoke_run, gestures_data_dir):
    workdir, _ = distill_smoke_run
    record = (workdir / "config.json").read_text()
    assert json.loads(record)["optimizer"]["learning_rate"] == 0.01
    proc = run_cli("--config=configs/distill.py:smoke", f"--workdir={workdir}", f"--config.data.data_dir={gestures_data_dir}",
                   "--config.optimizer.learning_rate=0.5")
    # found after start-up (the log lines before it are the run's usual INFO lines): one error line, last
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and proc.stderr.strip().endswith(errors[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert errors[0].startswith(f"error: stage teacher_big in {workdir} was trained with another config: "
                                f"optimizer.learning_rate: 0.01 -> 0.5;"), errors[0]
    assert (workdir / "config.json").read_text() == record


def test_predict_gives_the_students_boxes_as_json(distill_smoke_run, tmp_path):
    from PIL import Image

    workdir, _ = distill_smoke_run
    for i, size in enumerate([(64, 64), (90, 120)]):
        Image.fromarray(np.full(size + (3,), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={workdir}", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    for line in lines:
        assert set(line) == {"file", "detections"} and isinstance(line["detections"], list)
        for d in line["detections"]:
            assert set(d) == {"class", "score", "box_xyxy"} and d["score"] >= 0.3


def test_evaluate_and_export_a_finished_workdir(distill_smoke_run, gestures_data_dir, tmp_path):
    import orbax.checkpoint as ocp

    from jaxface.train.checkpoints import load_exported

    workdir, _ = distill_smoke_run
    own = (workdir / "results.json").read_text()
    proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", "--split=validation",
                           f"--out={tmp_path / 'eval'}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.load(open(tmp_path / "eval" / "results.json"))
    assert [r["stage"] for r in evaluated["rows"]] == [r["stage"] for r in json.loads(own)["rows"]]
    assert "Split 'validation'" in (tmp_path / "eval" / "results.md").read_text()
    assert (tmp_path / "eval" / "loss_curves.png").exists() and (workdir / "results.json").read_text() == own

    proc = subprocess.run([sys.executable, "-m", "experiments.export", f"--workdir={workdir}",
                           f"--out={tmp_path / 'exported'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.load(open(tmp_path / "exported" / "model.json"))
    assert (info["recipe"], info["stage"], info["model"]) == ("distill", "student_kd_both", "student")
    assert info["input"]["image"] == {"shape": [64, 64, 3], "dtype": "uint8", "range": [0, 255], "layout": "HWC, RGB"}
    assert info["config"]["models"]["student"]["widths"] == [16, 32, 64]
    plain = ocp.PyTreeCheckpointer().restore(str(tmp_path / "exported" / "model"))  # no jaxface code involved
    ours = load_exported(str(workdir), "student_kd_both", ["student"])["student"]
    for a, b in zip(*(jax.tree.leaves({k: tree[k] for k in ("params", "batch_stats")}) for tree in (plain, ours))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = subprocess.run([sys.executable, "-m", "experiments.export", f"--workdir={workdir}",
                            f"--out={tmp_path / 'exported'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists already" in again.stderr
