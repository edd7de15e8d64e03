r"""Exports the final model of a finished run: a plain orbax checkpoint plus a JSON of its config and input.

  python -m experiments.export --workdir=runs/distill --out=exported/distill

`<out>/model` restores without jaxface: `orbax.checkpoint.PyTreeCheckpointer().restore('<out>/model')`
gives {'params', 'batch_stats'} as numpy arrays; `<out>/model.json` names the recipe, stage and model,
the input it reads (shape, dtype, value range) and the run's config (architecture under `config`).
"""

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export the final model of a finished run.")
    parser.add_argument("--workdir", required=True, help="workdir of a finished experiments.run run")
    parser.add_argument("--out", required=True, help="folder to write model/ and model.json to")
    args = parser.parse_args(argv)
    from experiments.predict import load_run
    from jaxface.train import checkpoints, driver

    checkpoints.quiet_orbax()
    try:
        config, recipe = load_run(args.workdir)
        info = driver.export_run(recipe, config, args.workdir, args.out)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: info[k] for k in ("recipe", "stage", "model", "input")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
