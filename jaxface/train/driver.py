"""The shared driver: what every recipe's run does, written once.

A recipe is a module that provides (the contract, `Recipe`):

  validate_config(config)                 one ValueError line per problem, before anything is written
  load_data(config) -> data               the recipe's splits; preparing a data set happens on process 0
                                          first (`devices.main_process_first`)
  make_stages(config, data) -> [Stage]    what the core trains, in order
  evaluate(config, store, data, mesh, workdir) -> Report
                                          the results table, notes and summary (and the recipe's plots)
  imported_stages(config) -> {stage: dir} optional: stages finished in other runs (e.g. reused teachers)

`train_and_evaluate(recipe, config, workdir)` then validates, takes the workdir lock, loads the data,
trains (`loop.run_stages`: resume, checkpoints, config.json once the workdir's fingerprints match),
evaluates and writes `results.json` / `results.md`. `python -m experiments.run` is this function
behind a command line, so a notebook that calls it gets the same workdir as the CLI.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

from jaxface.train import devices, loop, writers
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

    def evaluate(self, config, store: loop.StageStore, data, mesh, workdir: str) -> Report: ...


def train_and_evaluate(recipe: Recipe, config, workdir: str, mesh=None) -> dict:
    """Trains (or resumes) every stage of `recipe` under `config` in `workdir`, evaluates, writes the
    results; returns {'summary', 'columns', 'rows', **extra}. Raises loop.WorkdirBusyError when another
    run holds the workdir, loop.ConfigChangedError when the workdir was trained with another config."""
    recipe.validate_config(config)
    mesh = devices.make_mesh() if mesh is None else mesh
    with loop.WorkdirLock(workdir):
        data = recipe.load_data(config)
        imported = recipe.imported_stages(config) if hasattr(recipe, "imported_stages") else {}
        store = loop.run_stages(recipe.make_stages(config, data), workdir=workdir,
                                options=loop.LoopOptions.from_config(config), mesh=mesh, imported=imported,
                                config_json=config.to_json_best_effort(indent=1))
        report = recipe.evaluate(config, store, data, mesh, workdir)
        writers.write_results(workdir, title=report.title, columns=list(report.columns), rows=list(report.rows),
                              notes=list(report.notes), extra={**report.extra, "summary": dict(report.summary)})
    return {"summary": dict(report.summary), "columns": list(report.columns), "rows": list(report.rows),
            **report.extra}
