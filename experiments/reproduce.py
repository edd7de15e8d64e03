r"""Reproduces every recipe's claims over seeds and writes one report.

  python -m experiments.reproduce --seeds=3                                   # all five recipes, default configs
  python -m experiments.reproduce --seeds=3 --recipes=distill,mutual --workdir=runs/reproduce
  python -m experiments.reproduce --seeds=2 --variant=smoke --workdir=/tmp/repro   # minutes: the code path only
  python -m experiments.reproduce --seeds=3 --report_only     # the report again from the finished runs

Each recipe runs `configs/<recipe>.py:<variant>` with `config.num_seeds = --seeds` in
`<workdir>/<recipe>/` (an ordinary several-seed run: resumable, finished seeds are skipped, and what a
recipe shares between seeds, e.g. distill's teachers, is trained once: `share_across_seeds`). The report,
`<workdir>/RESULTS.md` (and `RESULTS.json`), gives per recipe its table as mean ± std over the seeds, each
claim of its seed document judged by the core (`driver.judge_claims`: the method's mean minus the
baseline's against 2 x the larger of their stds, the paired gain, on how many seeds it was positive), the
wall time and the machine, and `<workdir>/results/<recipe>_claims.png`: per claim, each seed's baseline
and method values joined (the paired gain) beside each side's mean ± std. `--report_only` writes the
report again from the seeds' own results.json, training and evaluating nothing, the wall times kept from
the previous RESULTS.json. Choices were made on the validation split; the tables are on each config's
eval split (the test split by default).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time


def run_recipes(runs: dict, workdir: str, seeds: int) -> dict:
    """{recipe name: (recipe module, config)} -> {name: {'results', 'wall_s', 'command'}}, each config run
    over `seeds` seeds in `<workdir>/<name>`, in order."""
    from jaxface.train import driver

    out = {}
    for name, (recipe, config) in runs.items():
        config = config.copy_and_resolve_references()
        config.unlock()
        config.num_seeds = seeds
        start = time.perf_counter()
        results = driver.train_and_evaluate(recipe, config.lock(), os.path.join(workdir, name))
        out[name] = {"results": results, "wall_s": time.perf_counter() - start}
    return out


def report_recipes(runs: dict, workdir: str, seeds: int) -> dict:
    """As `run_recipes`, from finished runs: each recipe's several-seed report written again from its
    seeds' results.json (`driver.report_over_seeds`); wall times from the previous RESULTS.json."""
    from jaxface.train import driver

    previous = os.path.join(workdir, "RESULTS.json")
    walls = {}
    if os.path.exists(previous):
        with open(previous) as f:
            walls = {name: entry.get("wall_s") for name, entry in json.load(f).items()}
    out = {}
    for name, (recipe, config) in runs.items():
        config = config.copy_and_resolve_references()
        config.unlock()
        config.num_seeds = seeds
        out[name] = {"results": driver.report_over_seeds(recipe, config.lock(), os.path.join(workdir, name)),
                     "wall_s": walls.get(name)}
    return out


def machine() -> str:
    import jax

    from jaxface.train import devices

    return (f"{devices.describe(devices.make_mesh())}; host {platform.node()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, JAX {jax.__version__}")


def write_report(found: dict, workdir: str, seeds: int, variant: str) -> str:
    """RESULTS.md and RESULTS.json in `workdir` (process 0); returns the markdown."""
    import jax

    from jaxface.evaluation import plots
    from jaxface.train import writers

    lines = [f"# Reproduction over {seeds} seeds (variant {variant})", "",
             f"Machine: {machine()}. Command: `python -m experiments.reproduce --seeds={seeds} "
             f"--variant={variant} --recipes={','.join(found)}`.", ""]
    for name, entry in found.items():
        res = entry["results"]
        claims = res["summary"].get("claims", {})
        figure = f"results/{name}_claims.png"
        wall = "not recorded" if entry["wall_s"] is None else f"{entry['wall_s'] / 60:.1f} min"
        lines += [f"## {name}: {res['title']}", "", f"Wall time {wall}; per-seed runs in `{name}/seed_<k>/`, the "
                  f"table in `{name}/results.md`" + (f", the claims per seed in `{figure}`." if claims else "."), "",
                  writers.markdown_table(res["columns"], res["rows"]).rstrip("\n"), ""]
        if claims and jax.process_index() == 0:
            plots.save_paired_claims(os.path.join(workdir, figure), list(claims.values()),
                                     title=f"{name}: {res['title']}")
        for claim, v in claims.items():
            held = "holds beyond the spread" if v["beyond_spread"] else "holds on average, inside the spread" \
                if v["holds_on_average"] else "does NOT hold"
            spread = "one seed: no spread" if v["bar"] is None else \
                f"paired std {v['paired_std']:.3g}, bar {v['bar']:.3g}"
            lines.append(f"- {v.get('text', claim)} ({v.get('column', '?')}): gain {v['gain']:+.4g} ({spread}; "
                         f"positive in {v['positive_in']} of {v['seeds']} seeds) -> {held}")
        lines += ["" if claims else "- (this recipe declares no claims)", ""]
    markdown = "\n".join(lines)
    payload = {name: {"wall_s": e["wall_s"], **e["results"]} for name, e in found.items()}
    if jax.process_index() == 0:
        writers.write_text_atomically(os.path.join(workdir, "RESULTS.md"), markdown)
        writers.write_text_atomically(os.path.join(workdir, "RESULTS.json"),
                                      json.dumps(payload, indent=1, default=float))
    return markdown


def main(argv=None) -> int:
    from jaxface.recipes import RECIPES, get_recipe

    parser = argparse.ArgumentParser(description="Run every recipe over seeds and write RESULTS.md.")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per recipe (config.seed, +1, ...)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--variant", default="default", help="the config variant of every recipe (e.g. smoke)")
    parser.add_argument("--workdir", default="runs/reproduce", help="one folder per recipe below it")
    parser.add_argument("--report_only", action="store_true",
                        help="write the report again from the finished runs in --workdir; train nothing")
    parser.add_argument("--compilation_cache_dir", default=os.environ.get("JAXFACE_COMPILATION_CACHE",
                                                                         "~/.cache/jaxface/xla"))
    args = parser.parse_args(argv)
    try:
        names = [n for n in args.recipes.split(",") if n]
        unknown = [n for n in names if n not in RECIPES]
        if unknown or not names:
            raise ValueError(f"--recipes={args.recipes}: unknown {unknown}; allowed: {', '.join(RECIPES)}")
        if args.seeds < 1:
            raise ValueError(f"--seeds={args.seeds} must be >= 1")
        configs = {n: importlib.import_module(f"configs.{n}").get_config(args.variant) for n in names}
        runs = {n: (get_recipe(n), c) for n, c in configs.items()}
        for recipe, config in runs.values():
            recipe.validate_config(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import jax

    if args.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(args.compilation_cache_dir))
    workdir = os.path.abspath(args.workdir)
    try:
        found = (report_recipes if args.report_only else run_recipes)(runs, workdir, args.seeds)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(write_report(found, workdir, args.seeds, args.variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
