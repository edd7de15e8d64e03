"""Validation during training (`stages.Validation`): metrics, the best checkpoint, early stopping; and
`select_better`, the derived stage that keeps the better of several finished models.

Per stage, `<stage dir>/validation.json` lists every evaluation [{step, metrics}] and
`<stage dir>/best/` holds the best checkpoint with `BEST.json` {step, metric, value}. On a resume
from step s the evaluations after s are dropped and redone, so the best checkpoint and the early-
stopping count follow exactly the path an uninterrupted run takes.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
from absl import logging

from jaxface.train import checkpoints, devices
from jaxface.train.checkpoints import StageCheckpoints
from jaxface.train.predict import Predictor
from jaxface.train.stages import Loader, Stage, Validation
from jaxface.train.writers import write_text_atomically

HISTORY_FILE = "validation.json"


def _resolve(source, load: Loader):
    return source if hasattr(source, "gather") or hasattr(source, "__getitem__") else source(load)


def evaluate_model(validation: Validation, predictor: Predictor, source) -> dict[str, float]:
    """`validation.metrics` of the predictions of `predictor`'s variables on `source` (all processes
    get the same outputs, so the same metrics)."""
    outputs = predictor.predict_split(source, limit=validation.limit, keep_inputs=tuple(validation.keep_inputs))
    metrics = {k: float(v) for k, v in validation.metrics(outputs).items()}
    if validation.select and validation.select not in metrics:
        raise KeyError(f"validation select metric {validation.select!r} is not among its metrics {sorted(metrics)}")
    return metrics


def replay(validation: Validation, history: Sequence[dict]) -> tuple[dict | None, int]:
    """(best entry or None, evaluations since it) after the evaluations of `history` in order."""
    best, since = None, 0
    for entry in history:
        if validation.select and validation.improves(entry["metrics"][validation.select],
                                                     best and best["metrics"][validation.select]):
            best, since = entry, 0
        else:
            since += 1
    return best, since


class StageValidator:
    """Runs a training stage's `Validation`; built by the loop once the stage's state is restored."""

    def __init__(self, stage: Stage, directory: str, load: Loader, mesh, variables, start_step: int):
        self.validation, self.directory = stage.validation, directory
        self.models = list(stage.export) if stage.export is not None else sorted(stage.optimizers)
        self.source = _resolve(self.validation.source, load)
        self.predictor = Predictor(self.validation.predict, variables, mesh, self.validation.batch_size)
        self.history = [e for e in self._read_history() if e["step"] <= start_step]
        self.best, self.since_best = replay(self.validation, self.history)

    def _read_history(self) -> list[dict]:
        path = os.path.join(self.directory, HISTORY_FILE)
        history = []
        if jax.process_index() == 0 and os.path.exists(path):
            with open(path) as f:
                history = json.load(f)
        # every process replays process 0's history, so their decisions agree
        return devices.main_process_json(history)

    def due(self, step: int, num_steps: int) -> bool:
        return step % self.validation.every_steps == 0 or step == num_steps

    def __call__(self, step: int, state) -> tuple[dict[str, float], bool]:
        """Evaluates the state after `step` steps: ({'val/<metric>': value}, whether to stop early)."""
        v = self.validation
        self.predictor.set_variables(state.variables(v.model))
        metrics = evaluate_model(v, self.predictor, self.source)
        entry = {"step": step, "metrics": metrics}
        improved = bool(v.select) and devices.main_process_value(
            v.improves(metrics[v.select], self.best and self.best["metrics"][v.select]))
        if improved:
            self._save_best(step, state, metrics[v.select])
            self.best, self.since_best = entry, 0
        else:
            self.since_best += 1
        self.history.append(entry)
        if jax.process_index() == 0:
            write_text_atomically(os.path.join(self.directory, HISTORY_FILE), json.dumps(self.history, indent=1))
        stop = bool(v.patience) and self.since_best >= v.patience
        if stop:
            logging.info("early stop at step %d: %s has not improved for %d evaluations (best %.6g at step %d)",
                         step, v.select, self.since_best, self.best["metrics"][v.select], self.best["step"])
        return {f"val/{k}": value for k, value in metrics.items()}, stop

    def _save_best(self, step: int, state, value: float) -> None:
        best_dir = os.path.join(self.directory, checkpoints.BEST_DIR)
        ckpt = StageCheckpoints(best_dir, save_every_steps=1, keep=1)
        try:
            ckpt.save_variables(step, {m: state.variables(m) for m in self.models})
        finally:
            ckpt.close()
        if jax.process_index() == 0:  # written once the checkpoint is on disk
            write_text_atomically(os.path.join(best_dir, checkpoints.BEST_FILE),
                                  json.dumps({"step": step, "metric": self.validation.select, "value": value}))
        devices.barrier(f"best checkpoint {step}")

    def summary(self) -> dict:
        """What the DONE marker records: the best evaluation (if selected) and the evaluation count."""
        out = {"evaluations": len(self.history)}
        if self.best is not None:
            out["best"] = {"step": self.best["step"], "metric": self.validation.select,
                           "value": self.best["metrics"][self.validation.select]}
        return out


def select_better(name: str, candidates: Sequence[tuple], validation: Validation, *,
                  export_as: str | None = None) -> Stage:
    """A derived stage that evaluates finished models with `validation` (its predict, source, metrics,
    select and mode) and keeps the best one, exported as `export_as` (default: the winner's model name).

    candidates: (stage, model) pairs, or (stage, model, predict) triples for candidates of different
    architectures (e.g. a student and its teacher), each evaluated with its own predict function.
    Its decision {'chosen': 'stage/model', 'metric', 'values': {'stage/model': value}} goes into the DONE
    marker and results.json. Ties keep the first."""
    if not validation.select:
        raise ValueError(f"stage {name}: select_better needs a validation `select` metric")

    def derive(load, mesh):
        predictors, values, best = {}, {}, None
        source = _resolve(validation.source, load)
        for stage, model, *own in candidates:
            variables, predict = load(stage)[model], own[0] if own else validation.predict
            if predict not in predictors:  # compiled once per predict function
                predictors[predict] = Predictor(predict, variables, mesh, validation.batch_size)
            predictor = predictors[predict]
            predictor.set_variables(variables)
            key = f"{stage}/{model}"
            values[key] = evaluate_model(validation, predictor, source)[validation.select]
            if best is None or validation.improves(values[key], values[best]):
                best = key
        stage, model = best.split("/")
        decision = {"chosen": best, "metric": validation.select, "mode": validation.mode, "values": values}
        return {export_as or model: load(stage)[model]}, decision

    return Stage(name=name, derive=derive)
