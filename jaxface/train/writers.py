"""Metrics and results writers. Only process 0 writes; the others get no-op writers.

- `metrics.jsonl`: one line per step {"stage", "step", metric: value, ...}; on a resume the replayed
  steps are appended again, and readers keep the last line of each (stage, step).
- `starts.jsonl`: one line each time a run starts training a stage {"stage", "from_step", "num_steps",
  "devices", "processes", "time"}: from_step 0 is a fresh start, > 0 the checkpoint a resume read.
- `tensorboard/<stage>/`: TensorBoard event files (tensorboardX: no TensorFlow needed).
- `results.json` / `results.md`: the recipe's results table, written through `write_results`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import jax


class MetricWriter:
    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.workdir = workdir
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb: dict[str, Any] = {}
        self._jsonl = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write(self, stage: str, rows: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        """rows: (step, {metric: float}) in step order; `step` counts from 1 (after that many updates)."""
        if not self.enabled:
            return
        tb = self._tb.get(stage)
        if tb is None:
            from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
            tb = self._tb[stage] = SummaryWriter(os.path.join(self.workdir, "tensorboard", stage))
        for step, metrics in rows:
            self._jsonl.write(json.dumps({"stage": stage, "step": step, **metrics}) + "\n")
            for k, v in metrics.items():
                tb.add_scalar(k, v, step)
        self._jsonl.flush()

    def record_start(self, stage: str, from_step: int, num_steps: int, num_devices: int) -> None:
        """Appends to `starts.jsonl` that this run trains `stage` from step `from_step` (0 = fresh)."""
        if not self.enabled:
            return
        record = {"stage": stage, "from_step": from_step, "num_steps": num_steps, "devices": num_devices,
                  "processes": jax.process_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(os.path.join(self.workdir, "starts.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()
            for tb in self._tb.values():
                tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            for tb in self._tb.values():
                tb.close()


def write_text_atomically(path: str, text: str) -> None:
    """A crash leaves either the old file or the whole new one."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> dict[str, dict[int, dict]]:
    """metrics.jsonl -> {stage: {step: metrics}}, the last record of a step winning (resumes replay steps)."""
    out: dict[str, dict[int, dict]] = {}
    for rec in _read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        stage, step = rec.pop("stage"), rec.pop("step")
        out.setdefault(stage, {})[step] = rec
    return out


def read_starts(workdir: str) -> list[dict]:
    """starts.jsonl as a list of records, oldest first (see `MetricWriter.record_start`)."""
    return _read_jsonl(os.path.join(workdir, "starts.jsonl"))


def read_metric_lines(workdir: str) -> list[tuple[str, int]]:
    """(stage, step) of every line of metrics.jsonl in file order, replayed steps included."""
    return [(rec["stage"], rec["step"]) for rec in _read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Rate and ETA of a stage, measured over the steps run in this process (compilation excluded
    after the first log line)."""

    def __init__(self, total_steps: int, start_step: int, examples_per_step: int):
        self.total, self.examples_per_step = total_steps, examples_per_step
        self._t0, self._s0 = time.perf_counter(), start_step
        self._last_log = self._t0

    def due(self, every_seconds: float) -> bool:
        return time.perf_counter() - self._last_log >= every_seconds

    def line(self, stage: str, step: int, metrics: Mapping[str, float]) -> str:
        now = time.perf_counter()
        self._last_log = now
        steps_done = step - self._s0
        rate = steps_done / (now - self._t0) if steps_done > 0 else float("nan")
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        speed = f"{rate * self.examples_per_step:.0f} img/s" if steps_done > 0 else "compiling"
        eta = format_duration((self.total - step) / rate)
        return f"[{stage}] step {step}/{self.total} {shown} | {speed} | ETA {eta}"

    def restart_clock(self, step: int) -> None:
        """Called after the first (compiling) step so img/s measures steady-state training."""
        self._t0, self._s0 = time.perf_counter(), step


def format_value(v: Any) -> str:
    """A table cell: floats to 4 significant digits, thousands separated."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(format_value(r.get(c, "")) for c in columns) + " |\n" for r in rows)


def write_results(workdir: str, *, title: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
                  notes: Sequence[str] = (), extra: Mapping[str, Any] | None = None) -> None:
    """results.json (machine-readable: rows + extra) and results.md (title, table, notes), atomically."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    payload = {"title": title, "columns": list(columns), "rows": list(rows), **(extra or {})}
    md = f"# {title}\n\n" + markdown_table(columns, rows) + "".join(f"\n{n}\n" for n in notes)
    for name, text in (("results.json", json.dumps(payload, indent=1, default=float)), ("results.md", md)):
        write_text_atomically(os.path.join(workdir, name), text)
