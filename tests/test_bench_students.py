"""experiments.bench_students (benchmark d) on finished smoke runs of both distilled recipes (opt-in: it
needs the distill and semi_distill smoke runs and compiles each network's predict function per batch size).

  JAXFACE_SLOW_TESTS=1 python -m pytest -q tests/test_bench_students.py
"""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(os.environ.get("JAXFACE_SLOW_TESTS") != "1", reason="~4 min on 2 loaded cores; "
                                "JAXFACE_SLOW_TESTS=1")


def bench(*args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as the benchmark is meant
    return subprocess.run([sys.executable, "-m", "experiments.bench_students", "--seconds=0.05", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def semi_distill_smoke_run(gestures_data_dir, tmp_path_factory):
    from configs import semi_distill as semi_config
    from jaxface.recipes import semi_distill
    from jaxface.train import driver

    config = semi_config.get_config("smoke")
    config.data.data_dir = gestures_data_dir
    workdir = tmp_path_factory.mktemp("semi_distill_smoke")
    driver.train_and_evaluate(semi_distill, config, str(workdir))
    return workdir


def timed_networks(stdout: str) -> dict[tuple[int, str], str]:
    """{(batch, network): the rest of its timing line} from the benchmark's table."""
    found = re.findall(r"^\s*(\d+)\s+(student|teacher\w*)\s+([\d,]+\s.*)$", stdout, re.M)
    return {(int(b), name): rest for b, name, rest in found}


def check_side_by_side(stdout: str, workdir, metric: str, row_name, networks) -> None:
    """Every results row of a timed network is printed with its own metric, as results.json has it."""
    results = json.loads((workdir / "results.json").read_text())
    for row in results["rows"]:
        if str(row["model"]).split(" ")[0] in networks:
            pattern = rf"^\s+{re.escape(row_name(row))}\s+{re.escape(str(row['model']))}\s+(\S+)\s+[\d.]+ / [\d.]+$"
            match = re.search(pattern, stdout, re.M)
            assert match, f"no line for {row_name(row)} ({row['model']}) in\n{stdout}"
            assert float(match.group(1)) == pytest.approx(row[metric], abs=1e-4)  # printed to 4 decimals


def test_distill_students_against_their_teachers(distill_smoke_run):
    workdir, _ = distill_smoke_run
    proc = bench("--config=configs/distill.py:smoke", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = timed_networks(proc.stdout)
    networks = ("student", "teacher_big", "teacher_hr")
    assert set(lines) == {(b, n) for b in (1, 64) for n in networks}, proc.stdout
    assert "128x128" in lines[1, "teacher_hr"] and "64x64" in lines[1, "student"]
    for b in (1, 64):  # the student's speed-up over each teacher ends the teacher's line
        assert re.search(r"\d+\.\d\dx$", lines[b, "teacher_big"]) and re.search(r"\d+\.\d\dx$", lines[b, "teacher_hr"])
    check_side_by_side(proc.stdout, workdir, "mAP@0.5", lambda row: row["stage"], networks)


def test_semi_distill_student_against_its_teacher(semi_distill_smoke_run):
    workdir = semi_distill_smoke_run
    proc = bench("--config=configs/semi_distill.py:smoke", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(timed_networks(proc.stdout)) == {(b, n) for b in (1, 64) for n in ("student", "teacher")}, proc.stdout
    check_side_by_side(proc.stdout, workdir, "test acc", lambda row: f"{row['labels']}: {row['stage']}",
                       ("student", "teacher"))


def test_without_a_run_it_times_and_says_so():
    proc = bench("--config=configs/semi_distill.py:smoke", "--batch_sizes=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(timed_networks(proc.stdout)) == {(1, "student"), (1, "teacher")}
    assert "metric: no run given" in proc.stdout


def test_a_recipe_without_students_or_another_run_is_one_error_line(semi_distill_smoke_run):
    proc = bench("--config=configs/multitask.py:smoke")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: config.recipe='multitask' is not a distilled recipe; allowed: distill, semi_distill")
    proc = bench("--config=configs/semi_distill.py", f"--workdir={semi_distill_smoke_run}")  # not the smoke networks
    assert proc.returncode == 2
    differ = r"^error: --config's networks differ from the run's .*data.crop_size"
    assert re.search(differ, proc.stderr, re.M), proc.stderr
