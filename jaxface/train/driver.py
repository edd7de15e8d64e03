"""The shared driver: what every recipe's run does, written once.

A recipe is a module that provides (the contract, `Recipe`):

  validate_config(config)                 one ValueError line per problem, before anything is written
  load_data(config) -> data               the recipe's splits; preparing a data set happens on process 0
                                          first (`devices.main_process_first`)
  make_stages(config, data) -> [Stage]    what the core trains, in order
  evaluate(config, store, data, mesh, out_dir) -> Report
                                          the results table, notes and summary; figures go to out_dir
                                          (the run's own metrics are read from store.workdir)
  EXPORT = (stage, model)                 the method's final model, for export and predict
  input_format(config) -> {name: {'shape', 'dtype', ...}}   what that model reads, per example
  imported_stages(config) -> {stage: dir} optional: stages finished in other runs (e.g. reused teachers)
  predict_images(config, workdir, images) -> [dict]         optional: `experiments.predict`
  LOSS_CURVE = ('task', 'loss')           optional: the metric plotted per stage (first one logged)

`train_and_evaluate(recipe, config, workdir)` then validates, takes the workdir lock, loads the data,
trains (`loop.run_stages`: resume, checkpoints, config.json once the workdir's fingerprints match),
evaluates and writes `results.json` / `results.md` and the common figures (`write_common_plots`).
`python -m experiments.run` is this function behind a command line, so a notebook that calls it gets
the same workdir as the CLI. On a finished workdir, `evaluate_run` re-evaluates (another split,
another folder) and `export_run` writes the final model as a plain orbax checkpoint
(`experiments.evaluate`, `experiments.export`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Protocol, Sequence

import jax

from jaxface.train import checkpoints, devices, loop, writers
from jaxface.train.stages import Stage


@dataclasses.dataclass
class Report:
    """What a recipe's evaluation found: `rows` of the results table under `columns`, notes printed
    below it (the claim and whether it held, what was measured how), a `summary` of the claim, and any
    `extra` JSON-able results (e.g. per-class AP) stored in results.json next to them."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Mapping[str, Any]]
    notes: Sequence[str] = ()
    summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Recipe(Protocol):
    def validate_config(self, config) -> None: ...

    def load_data(self, config) -> Any: ...

    def make_stages(self, config, data) -> list[Stage]: ...

    def evaluate(self, config, store: loop.StageStore, data, mesh, out_dir: str) -> Report: ...


def train_and_evaluate(recipe: Recipe, config, workdir: str, mesh=None) -> dict:
    """Trains (or resumes) every stage of `recipe` under `config` in `workdir`, evaluates, writes the
    results; returns {'summary', 'columns', 'rows', **extra}. Raises loop.WorkdirBusyError when another
    run holds the workdir, loop.ConfigChangedError when the workdir was trained with another config.
    The run uses a locked copy of `config`: what config.json records is what ran."""
    config = config.copy_and_resolve_references().lock()
    recipe.validate_config(config)
    mesh = devices.make_mesh() if mesh is None else mesh
    with loop.WorkdirLock(workdir):
        data = recipe.load_data(config)
        imported = recipe.imported_stages(config) if hasattr(recipe, "imported_stages") else {}
        store = loop.run_stages(recipe.make_stages(config, data), workdir=workdir,
                                options=loop.LoopOptions.from_config(config), mesh=mesh, imported=imported,
                                config_json=config.to_json_best_effort(indent=1))
        report = recipe.evaluate(config, store, data, mesh, workdir)
        write_common_plots(workdir, workdir, getattr(recipe, "LOSS_CURVE", ("loss",)))
        return _write_report(workdir, report, store)


def write_common_plots(workdir: str, out_dir: str, loss_keys: Sequence[str] = ("loss",)) -> list[str]:
    """Figures every run gets, from its metrics.jsonl (process 0 only): `loss_curves.png`, per stage
    the first of `loss_keys` it logged (e.g. a distilled stage's task loss, comparable across stages),
    and `validation_curves.png` of every 'val/<metric>' when some stage validated during training."""
    metrics = writers.read_metrics(workdir)
    if jax.process_index() != 0 or not metrics:
        return []
    from jaxface.evaluation import plots  # matplotlib only where figures are drawn

    def curve(rows: dict, key: str) -> tuple[list, list]:
        steps = [s for s in sorted(rows) if key in rows[s]]
        return steps, [rows[s][key] for s in steps]

    written, curves, validation = [], {}, {}
    for stage, rows in metrics.items():
        logged = {k for r in rows.values() for k in r}
        key = next((k for k in loss_keys if k in logged), None)
        if key is not None:
            curves[stage] = curve(rows, key)
        validation.update({f"{stage} {k}": curve(rows, k) for k in sorted(logged) if k.startswith("val/")})
    if curves:
        written.append(plots.save_curves(os.path.join(out_dir, "loss_curves.png"), curves, log_y=True, ylabel="loss",
                                         title=f"training loss ({' or '.join(loss_keys)}) per stage"))
    if validation:
        written.append(plots.save_curves(os.path.join(out_dir, "validation_curves.png"), validation,
                                         title="validation during training", ylabel="metric"))
    return written


def stage_selections(store: loop.StageStore) -> dict:
    """{stage: what it selected}: a derived stage's `decision`, a validated stage's `best` checkpoint
    and `stopped_early_at` (from their DONE markers), for results.json."""
    out = {}
    for name in store.stage_names():
        if store.is_done(name):
            summary = store.summary(name)
            picked = {k: summary[k] for k in ("decision", "best", "stopped_early_at") if summary.get(k) is not None}
            if picked:
                out[name] = picked
    return out


def _write_report(out_dir: str, report: Report, store: loop.StageStore) -> dict:
    selections = stage_selections(store)
    extra = {**report.extra, "stages": selections} if selections else dict(report.extra)
    writers.write_results(out_dir, title=report.title, columns=list(report.columns), rows=list(report.rows),
                          notes=list(report.notes), extra={**extra, "summary": dict(report.summary)})
    return {"summary": dict(report.summary), "columns": list(report.columns), "rows": list(report.rows), **extra}


def evaluate_run(recipe: Recipe, config, workdir: str, *, split: str, out_dir: str, which: str | None = None,
                 mesh=None) -> dict:
    """Evaluates every stage of the finished run in `workdir` (its `config`) on `split` without training,
    writing results.json / results.md and the figures to `out_dir` (the run's own results stay as they are).
    which: the checkpoint each stage is read from: None, the stage's result (best where its validation
    selects one); 'last'; or 'best' where a stage keeps one."""
    config = config.copy_and_resolve_references()
    config.data.eval_split = split
    recipe.validate_config(config)
    mesh = devices.make_mesh() if mesh is None else mesh
    data = recipe.load_data(config)
    imported = recipe.imported_stages(config) if hasattr(recipe, "imported_stages") else {}
    stages = recipe.make_stages(config, data)
    store = loop.StageStore(workdir, stages, imported, which=which)
    unfinished = [s.name for s in stages if not store.is_done(s.name)]
    if unfinished:
        raise FileNotFoundError(f"{workdir}: stages {unfinished} are not finished; finish the run with experiments.run")
    loop.check_fingerprints(stages, store)
    os.makedirs(out_dir, exist_ok=True)
    report = recipe.evaluate(config, store, data, mesh, out_dir)
    write_common_plots(workdir, out_dir, getattr(recipe, "LOSS_CURVE", ("loss",)))
    return _write_report(out_dir, report, store)


def export_run(recipe: Recipe, config, workdir: str, out_dir: str) -> dict:
    """Writes the final model (`recipe.EXPORT`) of the finished run in `workdir` to `out_dir`:
    `model/`, a plain orbax PyTree checkpoint {'params', 'batch_stats'} that
    `orbax.checkpoint.PyTreeCheckpointer().restore(out_dir + '/model')` reads without jaxface, and
    `model.json` (recipe, stage, model, input format, the run's config). Returns model.json's content."""
    import orbax.checkpoint as ocp

    stage, model = recipe.EXPORT
    variables = checkpoints.load_exported(workdir, stage, [model])[model]
    if os.path.exists(os.path.join(out_dir, "model")):
        raise FileExistsError(f"{out_dir}/model exists already; choose another --out")
    os.makedirs(out_dir, exist_ok=True)
    ocp.PyTreeCheckpointer().save(os.path.join(os.path.abspath(out_dir), "model"),
                                  {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    info = {"recipe": config.recipe, "stage": stage, "model": model, "input": recipe.input_format(config),
            "jax": jax.__version__, "config": config.to_dict()}
    if jax.process_index() == 0:
        writers.write_text_atomically(os.path.join(out_dir, "model.json"), json.dumps(info, indent=1))
    return info
