r"""Trains and evaluates a recipe from a config file.

  python -m experiments.run --config=configs/distill.py --workdir=runs/distill
  python -m experiments.run --config=configs/distill.py:smoke --workdir=/tmp/smoke --config.train.batch_size=32

Multi-host: on Cloud TPU VMs JAX finds its peers by itself; on SLURM / Open MPI set JAXFACE_DISTRIBUTED=1;
elsewhere pass --coordinator_address=host:port --num_processes=N --process_id=i (see README).
"""

import importlib.util
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recipe_listing(configs_dir: str = os.path.join(REPO, "configs")) -> str:
    """One line per recipe of the registry (`jaxface.recipes.RECIPES`): the config files that select it
    and their variants, e.g. '  distill (configs/distill.py: default, smoke, lr128)'. Reads each config
    file's `VARIANTS` and the `recipe` of its first variant; imports no recipe, so --help stays fast."""
    from jaxface.recipes import RECIPES

    found = {name: [] for name in RECIPES}
    problems = []
    for file in sorted(f for f in os.listdir(configs_dir) if f.endswith(".py") and f[0] != "_"):
        shown = f"{os.path.basename(configs_dir)}/{file}"
        try:
            spec = importlib.util.spec_from_file_location(f"_jaxface_help_{file[:-3]}", os.path.join(configs_dir, file))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            variants = tuple(module.VARIANTS)
            recipe = module.get_config(variants[0]).recipe
        except Exception as e:  # noqa: BLE001  (a broken config file must not break --help)
            message = (str(e).splitlines() or [""])[0]
            problems.append(f"  {shown}: not readable ({type(e).__name__}: {message})")
            continue
        if recipe in found:
            found[recipe].append(f"{shown}: {', '.join(variants)}")
        else:
            problems.append(f"  {shown}: config.recipe={recipe!r} is not in the registry")
    lines = [f"  {name} ({'; '.join(configs) or 'no config file yet'})" for name, configs in found.items()]
    return "\n".join(lines + problems)


def _help_text() -> str:
    try:
        listing = recipe_listing()
    except Exception as e:  # noqa: BLE001
        listing = f"  (could not list them: {type(e).__name__}: {e})"
    text = f"\nRecipes (jaxface/recipes/__init__.py), their configs and variants (--config=FILE:VARIANT):\n{listing}\n"
    return text.replace("%", "%%")  # absl formats the docstring with %


__doc__ = (__doc__ or "") + _help_text()  # absl shows it for --help / --helpshort

_CONFIG = config_flags.DEFINE_config_file("config", "configs/distill.py", "Config file, optionally `path.py:variant`.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.", required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-host GPU clusters; or $JAXFACE_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes, with --coordinator_address (or $JAXFACE_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's id, with --coordinator_address (or $JAXFACE_PROCESS_ID).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", os.environ.get("JAXFACE_COMPILATION_CACHE", "~/.cache/jaxface/xla"),
    "Persistent XLA compilation cache, so a resumed or repeated run skips compiling ('' turns it off). "
    "Default: $JAXFACE_COMPILATION_CACHE, else ~/.cache/jaxface/xla.")


def parse_flags(argv):
    """absl's parser, with config errors (an unknown key raises AttributeError deep inside
    ml_collections) turned into one line and exit code 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        # an exception inside get_config arrives with its traceback: keep the first and last lines
        message = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        message = " ".join(str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").split())
        message = f"bad config override: {message}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def flag_or_env(flag, env_name: str, kind=str):
    """A distributed-run flag, else the environment variable a launcher may set instead."""
    if flag.value is not None or not os.environ.get(env_name):
        return flag.value
    try:
        return kind(os.environ[env_name])
    except ValueError:
        raise ValueError(f"${env_name}={os.environ[env_name]!r} must be an integer") from None


def config_recipe(config) -> str:
    """The config's recipe name; a config file that failed to load is a one-line error (ml_collections
    defers the failure to the first access)."""
    try:
        return config.recipe
    except OSError:
        path = config_flags.get_config_filename(flags.FLAGS["config"])
        configs = sorted(f"configs/{f}" for f in os.listdir("configs") if f.endswith(".py") and f[0] != "_") \
            if os.path.isdir("configs") else []
        hint = f"; configs here: {', '.join(configs)}" if configs else " (run from the repository root)"
        raise ValueError(f"--config={path} could not be loaded (no such file?){hint}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from jaxface.data.pipeline import DamagedDataError
    from jaxface.recipes import get_recipe
    from jaxface.train import checkpoints, devices, driver, loop

    checkpoints.quiet_orbax()
    if _COMPILATION_CACHE.value:
        # A restart after preemption otherwise spends minutes recompiling every stage it reaches.
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_COMPILATION_CACHE.value))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # the many small init programs add up
    config = _CONFIG.value
    workdir = os.path.abspath(_WORKDIR.value)
    try:
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise ValueError(f"--workdir={_WORKDIR.value} is an existing file, not a directory")
        recipe = get_recipe(config_recipe(config))
        # First: jax.distributed must start before anything touches a device (validation may).
        devices.initialize_distributed(flag_or_env(_COORDINATOR, "JAXFACE_COORDINATOR_ADDRESS"),
                                       flag_or_env(_NUM_PROCESSES, "JAXFACE_NUM_PROCESSES", int),
                                       flag_or_env(_PROCESS_ID, "JAXFACE_PROCESS_ID", int))
        recipe.validate_config(config)
        mesh = devices.make_mesh()
        devices.local_batch_size(config.train.batch_size, mesh)
    except (ValueError, KeyError, FileNotFoundError) as e:
        # A configuration error is one line, and nothing has been written to the workdir.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    logging.info("JAX %s on %s", jax.__version__, devices.describe(mesh))
    logging.info("config:\n%s", config)
    try:
        # locks the workdir; writes config.json once the workdir's stages are known to match the config
        results = driver.train_and_evaluate(recipe, config, workdir, mesh=mesh)
    except loop.WorkdirBusyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except (loop.ConfigChangedError, DamagedDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except loop.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(4)
    except loop.Preempted as e:
        logging.warning("%s", e)
        raise
    if jax.process_index() == 0:
        print(json.dumps(results.get("summary", {}), indent=1))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
