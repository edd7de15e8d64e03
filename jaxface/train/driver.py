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
  share_across_seeds(config, first_workdir) -> config   optional: what later seeds reuse of the first
                                          seed's run (e.g. its teachers), see `num_seeds` below
  CLAIMS = (Claim(method, baseline, column, text), ...)  optional: what the method claims, judged over seeds
                                          (or a function of the config giving them, `recipe_claims`)

`config.num_seeds = S > 1` (optional, default 1) trains the whole recipe S times, seed k = config.seed + i
in `<workdir>/seed_<k>/` (each an ordinary run: resume, fingerprints, its own results), then writes the
table of every numeric column as mean ± std over the seeds to `<workdir>/results.{json,md}`.

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
    if loop.num_seeds(config) > 1:
        with loop.WorkdirLock(workdir):
            if jax.process_index() == 0:  # what `experiments.evaluate` / `predict` read back
                os.makedirs(workdir, exist_ok=True)
                writers.write_text_atomically(os.path.join(workdir, "config.json"),
                                              config.to_json_best_effort(indent=1))
            runs = seed_runs(recipe, config, workdir)
            results = [train_and_evaluate(recipe, c, w, mesh) for w, c in runs]
            return _write_seed_report(recipe, config, workdir, runs, results)
    with loop.WorkdirLock(workdir):
        data = recipe.load_data(config)
        imported = recipe.imported_stages(config) if hasattr(recipe, "imported_stages") else {}
        store = loop.run_stages(recipe.make_stages(config, data), workdir=workdir,
                                options=loop.LoopOptions.from_config(config), mesh=mesh, imported=imported,
                                config_json=config.to_json_best_effort(indent=1))
        report = recipe.evaluate(config, store, data, mesh, workdir)
        write_common_plots(workdir, workdir, getattr(recipe, "LOSS_CURVE", ("loss",)))
        return _write_report(workdir, report, store, recipe_claims(recipe, config))


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


def _write_report(out_dir: str, report: Report, store: loop.StageStore, claims: Sequence[Claim] = ()) -> dict:
    """results.{json,md} of one run; the recipe's CLAIMS are judged on it (one seed) below its own notes."""
    selections = stage_selections(store)
    extra = {**report.extra, "stages": selections} if selections else dict(report.extra)
    summary, notes = dict(report.summary), list(report.notes)
    if claims:
        claim_notes, summary["claims"] = judge_claims(claims, [{"columns": report.columns, "rows": report.rows}])
        notes = claim_notes + notes
    writers.write_results(out_dir, title=report.title, columns=list(report.columns), rows=list(report.rows),
                          notes=notes, extra={**extra, "summary": summary})
    return {"title": report.title, "summary": summary, "columns": list(report.columns), "rows": list(report.rows),
            **extra}


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
    if loop.num_seeds(config) > 1:
        runs = seed_runs(recipe, config, workdir)
        outs = [os.path.join(out_dir, os.path.basename(w)) for w, _ in runs]
        results = [evaluate_run(recipe, c, w, split=split, out_dir=o, which=which, mesh=mesh)
                   for (w, c), o in zip(runs, outs)]
        return _write_seed_report(recipe, config, out_dir, [(o, c) for o, (_, c) in zip(outs, runs)], results)
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
    return _write_report(out_dir, report, store, recipe_claims(recipe, config))


def export_run(recipe: Recipe, config, workdir: str, out_dir: str) -> dict:
    """Writes the final model (`recipe.EXPORT`) of the finished run in `workdir` to `out_dir`:
    `model/`, a plain orbax PyTree checkpoint {'params', 'batch_stats'} that
    `orbax.checkpoint.PyTreeCheckpointer().restore(out_dir + '/model')` reads without jaxface, and
    `model.json` (recipe, stage, model, input format, the run's config). Returns model.json's content."""
    import orbax.checkpoint as ocp

    stage, model = recipe.EXPORT
    workdir = final_model_workdir(config, workdir)
    variables = checkpoints.load_exported(workdir, stage, [model])[model]
    if os.path.exists(os.path.join(out_dir, "model")):
        raise FileExistsError(f"{out_dir}/model exists already; choose another --out")
    os.makedirs(out_dir, exist_ok=True)
    ocp.PyTreeCheckpointer().save(os.path.join(os.path.abspath(out_dir), "model"),
                                  {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    info = {"recipe": config.recipe, "stage": stage, "model": model, "workdir": workdir,
            "input": recipe.input_format(config),
            "jax": jax.__version__, "config": config.to_dict()}
    if jax.process_index() == 0:
        writers.write_text_atomically(os.path.join(out_dir, "model.json"), json.dumps(info, indent=1))
    return info


# --- several seeds of one recipe (config.num_seeds) ---------------------------------------------
def seed_runs(recipe: Recipe, config, workdir: str) -> list[tuple[str, Any]]:
    """[(workdir, config)] of the seeds: seed k = config.seed + i trains in `<workdir>/seed_<k>` with
    config.seed = k and num_seeds = 1; a recipe's `share_across_seeds(config, first_workdir)` says what
    the later seeds take from the first seed's run instead of training it again."""
    runs = []
    for i in range(loop.num_seeds(config)):
        seed_config = config.copy_and_resolve_references()
        seed_config.unlock()
        seed_config.seed, seed_config.num_seeds = config.seed + i, 1
        if i and hasattr(recipe, "share_across_seeds"):
            seed_config = recipe.share_across_seeds(seed_config, runs[0][0])
        runs.append((os.path.join(workdir, f"seed_{config.seed + i}"), seed_config.lock()))
    return runs


def report_over_seeds(recipe: Recipe, config, workdir: str) -> dict:
    """Writes `workdir`/results.{json,md} again from the seeds' own results.json (nothing is trained or
    evaluated: e.g. after a change to how claims are reported); returns what `train_and_evaluate` does."""
    config = config.copy_and_resolve_references().lock()
    runs = seed_runs(recipe, config, workdir)
    missing = [w for w, _ in runs if not os.path.exists(os.path.join(w, "results.json"))]
    if missing:
        raise FileNotFoundError(f"no results.json in {', '.join(missing)}: train those seeds first")
    results = []
    for w, _ in runs:
        with open(os.path.join(w, "results.json")) as f:
            results.append(json.load(f))
    return _write_seed_report(recipe, config, workdir, runs, results)


def final_model_workdir(config, workdir: str) -> str:
    """Where the method's final model (`recipe.EXPORT`) is: the first seed's run when there are several."""
    return os.path.join(workdir, f"seed_{config.seed}") if loop.num_seeds(config) > 1 else workdir


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row_labels(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A name per row: its first column, or all its non-numeric cells joined when the first repeats."""
    first = [str(r.get(columns[0], "")) for r in rows]
    if len(set(first)) == len(first):
        return first
    return [" / ".join(str(r[c]) for c in columns if c in r and not _is_number(r[c])) for r in rows]


def aggregate_over_seeds(results: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> tuple[list, dict]:
    """The rows of several seeds' results tables (same columns, same rows in the same order: their first
    columns must agree): (display rows, {row name: {column: {'mean', 'std', 'values'}}}), a row named by
    `_row_labels`. A numeric column that differs between seeds shows 'mean ± std' (sample std, ddof=1); one
    identical in every seed (e.g. a teacher shared by the seeds, a parameter count) its value; text that
    differs (e.g. the network a selection chose) each seed's, joined by ' / '."""
    import numpy as np

    columns, first_rows = results[0]["columns"], results[0]["rows"]
    for seed, res in zip(seeds, results):
        if len(res["rows"]) != len(first_rows) or any(a.get(columns[0]) != b.get(columns[0])
                                                      for a, b in zip(res["rows"], first_rows)):
            raise ValueError(f"seed {seed}'s results table has other rows than seed {seeds[0]}'s: cannot average them")
    display, stats = [], {}
    for i, (label, first) in enumerate(zip(_row_labels(columns, first_rows), first_rows)):
        shown, stats[label] = {}, {}
        for column in columns:
            values = [res["rows"][i].get(column) for res in results]
            if not all(_is_number(v) for v in values) or len(set(map(str, values))) == 1:
                # text that differs between seeds (e.g. which network a selection chose) shows every seed's
                shown[column] = first.get(column, "") if len(set(map(str, values))) == 1 else \
                    " / ".join(map(str, values))
                continue
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
            stats[label][column] = {"mean": mean, "std": std, "values": [float(v) for v in values]}
            shown[column] = f"{writers.format_value(mean)} ± {writers.format_value(std)}"
        display.append(shown)
    return display, stats


RowSelector = Any  # a value of the table's first column, or {column: value} naming one row


def column_over_seeds(results: Sequence[Mapping[str, Any]], row: RowSelector, column: str):
    """np.ndarray [num_seeds] of `column` in the one row that `row` selects in each seed's table."""
    import numpy as np

    where = row if isinstance(row, Mapping) else {results[0]["columns"][0]: row}
    values = []
    for res in results:
        found = [r for r in res["rows"] if all(r.get(c) == v for c, v in where.items())]
        if len(found) != 1:
            raise ValueError(f"{len(found)} rows of the results table match {dict(where)}; a claim needs exactly one")
        values.append(found[0][column])
    return np.array(values, np.float64)


@dataclasses.dataclass(frozen=True)
class Claim:
    """`method` beats `baseline` on `column`; each names one row of the results table: a value of its first
    column, or {column: value, ...} (e.g. {'stage': 'mutual_r2', 'model': 'a'})."""

    method: RowSelector
    baseline: RowSelector
    column: str
    text: str = ""
    higher_is_better: bool = True

    def name(self) -> str:
        label = lambda row: "_".join(map(str, row.values())) if isinstance(row, Mapping) else str(row)
        return f"{label(self.method)}_vs_{label(self.baseline)}"


def recipe_claims(recipe: Recipe, config) -> tuple:
    """The recipe's CLAIMS: a tuple of `Claim`s, or a function of the config returning them (rows that
    depend on it, e.g. the last round's stage)."""
    claims = getattr(recipe, "CLAIMS", ())
    return tuple(claims(config) if callable(claims) else claims)


def _row_name(row) -> str:  # a claim's row selector as text: 'student', or 'mutual, a' for {column: value}
    return ", ".join(map(str, row.values())) if isinstance(row, Mapping) else str(row)


def judge_claims(claims: Sequence[Claim], results: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict]:
    """Each claim over the seeds' results: gain = mean(method) - mean(baseline) (sign flipped when lower is
    better), the paired gain's mean ± std, and whether it holds beyond the seed-to-seed spread:
    gain > 0 and gain >= 2 x max(std(method), std(baseline)) (sample stds). With one seed there is no spread
    to judge against and the note says so. Returns (notes, {claim.name(): {gain, bar, beyond_spread, ...}})."""
    import numpy as np

    notes, summary, names = [], {}, [c.name() for c in claims]
    for claim in claims:  # claims on several columns of the same two rows are told apart by the column
        key = claim.name() if names.count(claim.name()) == 1 else f"{claim.name()} [{claim.column}]"
        method, baseline = (column_over_seeds(results, row, claim.column) for row in (claim.method, claim.baseline))
        paired = (1.0 if claim.higher_is_better else -1.0) * (method - baseline)
        n, gain = len(paired), float(paired.mean())
        std = (lambda v: float(np.std(v, ddof=1))) if n > 1 else (lambda v: None)  # no spread on one seed
        bar = 2 * max(std(method), std(baseline)) if n > 1 else None
        summary[key] = {
            "gain": gain, "paired_std": std(paired), "bar": bar, "positive_in": int((paired > 0).sum()), "seeds": n,
            "beyond_spread": bar is not None and gain > 0 and gain >= bar, "holds_on_average": bool(gain > 0),
            "text": claim.text or claim.name().replace("_vs_", " beats "), "column": claim.column,
            "method": [float(v) for v in method], "baseline": [float(v) for v in baseline],  # per seed
            "method_row": _row_name(claim.method), "baseline_row": _row_name(claim.baseline)}
        if n == 1:
            verdict = f"{'higher' if gain > 0 else 'NOT higher'} on this one seed; a verdict against the " \
                      "seed-to-seed spread needs config.num_seeds >= 3"
            figures = f"{method[0]:.4f} vs {baseline[0]:.4f}"
        else:
            verdict = "holds beyond the spread" if 0 < gain and bar <= gain else \
                "holds on average, inside the spread" if gain > 0 else "does NOT hold"
            figures = (f"{method.mean():.4f} ± {std(method):.4f} vs {baseline.mean():.4f} ± {std(baseline):.4f}; "
                       f"paired gain {gain:+.4f} ± {std(paired):.4f}, positive in {int((paired > 0).sum())} of {n} "
                       f"seeds; 2 x the larger std = {bar:.4f}")
        notes.append(f"Claim: {summary[key]['text']} ({claim.column}: {figures})"
                     f" -> {verdict}.")
    return notes, summary


def summarize_summaries(summaries: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict]:
    """The default verdict over seeds: per summary value, numbers as mean/std, booleans as a count."""
    import numpy as np

    notes, out = [], {}
    for k in summaries[0]:
        values = [s.get(k) for s in summaries]
        if all(isinstance(v, bool) for v in values):
            out[k] = {"true_in": sum(values), "of": len(values)}
            notes.append(f"{k}: true in {sum(values)} of {len(values)} seeds.")
        elif all(_is_number(v) for v in values):
            out[k] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": values}
    return notes, out


def _write_seed_report(recipe: Recipe, config, out_dir: str, runs, results: list[dict]) -> dict:
    """`out_dir`/results.{json,md} over the seeds; runs: [(the folder of that seed's results, its config)]."""
    seeds = [c.seed for _, c in runs]
    rows, stats = aggregate_over_seeds(results, seeds)
    summaries = [r["summary"] for r in results]
    notes, summary = summarize_summaries(summaries)  # the recipe's own per-seed verdicts, counted
    if recipe_claims(recipe, config):
        claim_notes, summary["claims"] = judge_claims(recipe_claims(recipe, config), results)
        notes = claim_notes + notes
    per_seed = ", ".join(os.path.relpath(w, out_dir) if w.startswith(out_dir) else w for w, _ in runs)
    notes = [f"Mean ± std (sample, ddof=1) over {len(seeds)} seeds {seeds}; each seed's own table and "
             f"figures: {per_seed}.", *notes]
    title = f"{results[0]['title']} ({len(seeds)} seeds)"
    writers.write_results(out_dir, title=title, columns=results[0]["columns"], rows=rows, notes=notes,
                          extra={"seeds": seeds, "over_seeds": stats, "per_seed_summary": summaries,
                                 "summary": summary})
    return {"title": title, "summary": summary, "columns": results[0]["columns"], "rows": rows, "seeds": seeds,
            "over_seeds": stats, "per_seed_summary": summaries}
