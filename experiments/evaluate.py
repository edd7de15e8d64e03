r"""Re-evaluates a finished run without training; the run's own results stay as they are.

  python -m experiments.evaluate --workdir=runs/distill --split=validation   # -> runs/distill/eval_validation/
  python -m experiments.evaluate --workdir=W --which=last   # the last checkpoints, not the selected best

Writes results.json, results.md and the recipe's figures to --out (default <workdir>/eval_<split>).
"""

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a finished run on a split, without training.")
    parser.add_argument("--workdir", required=True, help="workdir of a finished experiments.run run")
    parser.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    parser.add_argument("--out", default=None, help="folder for the results (default: <workdir>/eval_<split>)")
    parser.add_argument("--which", choices=("best", "last"), default=None,
                        help="checkpoint of each stage: 'last', or 'best' where its validation keeps one "
                             "(default: each stage's result, i.e. its best if it selects one)")
    args = parser.parse_args(argv)
    from experiments.predict import load_run
    from jaxface.train import checkpoints, driver, loop

    checkpoints.quiet_orbax()
    out = args.out or os.path.join(args.workdir, f"eval_{args.split}" + (f"_{args.which}" if args.which else ""))
    try:
        config, recipe = load_run(args.workdir)
        results = driver.evaluate_run(recipe, config, args.workdir, split=args.split, out_dir=out,
                                       which=args.which)
    except (ValueError, KeyError, FileNotFoundError, loop.ConfigChangedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": out, "summary": results["summary"]}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
