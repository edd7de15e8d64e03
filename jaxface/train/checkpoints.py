"""Per-stage orbax checkpoints: periodic asynchronous saves, a 'done' marker, fallback on corruption."""

from __future__ import annotations

import json
import logging as py_logging
import os
from typing import Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxface.train import devices
from jaxface.train.writers import write_text_atomically

DONE_FILE = "DONE.json"
FINGERPRINT_FILE = "FINGERPRINT.json"  # the config a stage was started with (`Stage.fingerprint`)
BEST_DIR = "best"  # <stage dir>/best: the stage's best checkpoint by its validation metric
BEST_FILE = "BEST.json"  # in BEST_DIR, written once the best checkpoint is on disk: {step, metric, value}
WHICH = (None, "best", "last")


def is_done(directory: str) -> bool:
    """A stage is finished when its DONE marker exists (written only after its final checkpoint)."""
    return os.path.exists(os.path.join(directory, DONE_FILE))


def _write_json_atomically(path: str, value) -> None:
    write_text_atomically(path, json.dumps(value, indent=1))


def write_done_marker(directory: str, summary: dict) -> None:
    _write_json_atomically(os.path.join(directory, DONE_FILE), summary)


def read_done_marker(directory: str) -> dict:
    with open(os.path.join(directory, DONE_FILE)) as f:
        return json.load(f)


def write_fingerprint(directory: str, fingerprint: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    _write_json_atomically(os.path.join(directory, FINGERPRINT_FILE), fingerprint)


def read_fingerprint(directory: str) -> dict | None:
    """The fingerprint a stage was started with, or None (never started, or started before fingerprints)."""
    path = os.path.join(directory, FINGERPRINT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fingerprint_changes(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every key whose value differs (after a JSON round trip)."""
    current = json.loads(json.dumps(current))
    return [f"{k}: {saved.get(k, '(absent)')!r} -> {current.get(k, '(absent)')!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k, "(absent)") != current.get(k, "(absent)")]


def finished_stage_dir(path: str, stage: str) -> str:
    """The checkpoint directory of a finished `stage` at `path`, which is either a run's workdir or
    that stage's own directory (`<workdir>/checkpoints/<stage>`). Raises FileNotFoundError saying
    what is missing."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    for candidate in (path, os.path.join(path, "checkpoints", stage)):
        if devices.main_process_value(is_done(candidate)):  # one answer for all processes
            return candidate
    raise FileNotFoundError(f"{path} holds no finished {stage!r} stage (no {DONE_FILE} in it or in "
                            f"checkpoints/{stage}/ under it)")


def stages_from_other_runs(paths: dict[str, tuple[str, str]]) -> dict[str, str]:
    """{stage: checkpoint directory} of the stages a config takes from earlier runs instead of training
    them: `paths` is {stage: (config key, path)}, an empty path meaning 'train it here'. Raises
    FileNotFoundError naming the key when a path holds no finished stage (see `finished_stage_dir`)."""
    out = {}
    for stage, (key, path) in paths.items():
        if path:
            try:
                out[stage] = finished_stage_dir(path, stage)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{key}: {e}; give the workdir of an earlier run or its checkpoints/{stage} "
                                        f"directory, or '' to train {stage} here") from None
    return out


def has_best(directory: str) -> bool:
    """Whether the stage in `directory` keeps a best checkpoint (its validation selects one)."""
    return os.path.exists(os.path.join(directory, BEST_DIR, BEST_FILE))


def read_best(directory: str) -> dict | None:
    """{step, metric, value} of the stage's best checkpoint, or None when it keeps none."""
    if not has_best(directory):
        return None
    with open(os.path.join(directory, BEST_DIR, BEST_FILE)) as f:
        return json.load(f)


def restore_stage_variables(directory: str, models: list[str] | None = None, which: str | None = None) -> dict:
    """{model: {'params', 'batch_stats'?}} of the finished stage in `directory` (host arrays on this
    process's first device): `models`, or all it saved.

    which: None = the stage's result (its best checkpoint when its validation selects one, else its
    last); 'best' (FileNotFoundError if it keeps none); 'last' (the final step's).
    """
    if which not in WHICH:
        raise ValueError(f"which={which!r}; allowed: best, last (or None for the stage's result)")
    best = devices.main_process_value(has_best(directory))
    if which == "best" and not best:
        raise FileNotFoundError(f"{directory} keeps no best checkpoint: its stage has no validation metric "
                                f"to select one (use which='last')")
    ckpt = StageCheckpoints(os.path.join(directory, BEST_DIR) if best and which != "last" else directory,
                            save_every_steps=1, keep=1)
    try:
        return ckpt.restore_variables(models)
    finally:
        ckpt.close()


def load_exported(workdir: str, stage: str, models: list[str] | None = None, which: str | None = None) -> dict:
    """{model: {'params', 'batch_stats'?}} (host arrays on this process's first device) of a finished
    stage of the run in `workdir`: `models`, or every model the stage saved; `which` as in
    `restore_stage_variables`. FileNotFoundError with one line when the stage is not finished there."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints", stage)
    if not is_done(directory):
        raise FileNotFoundError(f"{workdir} has no finished {stage} stage; train it first with experiments.run")
    return restore_stage_variables(directory, models, which)


class _DropOrbaxInfo(py_logging.Filter):
    """Orbax logs dozens of INFO lines per save; keep its warnings and errors only."""

    def filter(self, record):
        return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax() -> None:
    for handler in py_logging.getLogger("absl").handlers + py_logging.getLogger().handlers:
        if not any(isinstance(f, _DropOrbaxInfo) for f in handler.filters):
            handler.addFilter(_DropOrbaxInfo())
    py_logging.getLogger("absl").addFilter(_DropOrbaxInfo())


def _state_payload(state) -> dict:
    """What is saved: everything but the optimizers themselves (static, rebuilt from the config)."""
    return dict(step=state.step, params=state.params, batch_stats=state.batch_stats, opt_state=state.opt_state,
                rng=state.rng)


class StageCheckpoints:
    """Checkpoints of one stage under `directory` (absolute; orbax writes from a background thread)."""

    def __init__(self, directory: str, *, save_every_steps: int, keep: int):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=save_every_steps, enable_async_checkpointing=True,
                create=True),
        )

    # --- finished stages -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return is_done(self.directory)

    def mark_done(self, summary: dict) -> None:
        """Written after the final save is on disk, so 'done' always has a checkpoint behind it."""
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            write_done_marker(self.directory, summary)
        # No process may look for the marker before process 0 has written it.
        devices.barrier(f"stage done: {os.path.basename(self.directory)}")  # hosts may mount the workdir elsewhere

    # --- save / restore --------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state, *, force: bool = False) -> bool:
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, args=ocp.args.StandardSave(_state_payload(state)), force=force)

    def save_variables(self, step: int, variables: dict[str, dict]) -> None:
        """Saves {model: {'params', 'batch_stats'?}} (no optimizer state) as checkpoint `step` and waits
        for it: the best checkpoint of a stage, or a derived stage's models. `restore_variables` reads it."""
        payload = {"params": {m: v["params"] for m, v in variables.items()},
                   "batch_stats": {m: v.get("batch_stats", {}) for m, v in variables.items()}}
        if step not in self._manager.all_steps():
            self._manager.save(step, args=ocp.args.StandardSave(payload), force=True)
        self._manager.wait_until_finished()

    def restore_latest(self, state):
        """Restores the newest readable checkpoint into `state`'s structure and shardings.

        A newest checkpoint that cannot be read (truncated by a crash, corrupted) is skipped with a
        warning and the one before it is used. Returns `state` itself when there is none.
        """
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                              _state_payload(state))
        for step in reversed(self.all_steps()):
            payload, problem = None, "unreadable on another process"
            try:
                payload = self._manager.restore(step, args=ocp.args.StandardRestore(target))
            except Exception as e:  # orbax raises many types for unreadable data
                problem = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            # Every process must resume from the same step, so one unreadable copy rules the step out.
            if devices.any_process(payload is None):
                logging.warning("checkpoint %s/%d is unreadable (%s); falling back to the previous one",
                                self.directory, step, problem)
                continue
            logging.info("resumed %s from step %d", self.directory, step)
            return state.replace(**payload)
        return state

    def _newest_metadata(self) -> tuple[int, dict]:
        """(step, tree of orbax ArrayMetadata) of the newest checkpoint, without reading any array."""
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        absl_logger = py_logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(py_logging.ERROR)  # orbax warns that the item has no metadata file of its own
        try:
            metadata = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(steps[-1]), "default"))
        finally:
            absl_logger.setLevel(level)
        return steps[-1], metadata.item_metadata

    def restore_variables(self, exported: list[str] | None) -> dict[str, dict]:
        """{model: {'params', 'batch_stats'?}} of the newest checkpoint (all models when `exported` is
        None), on this process's first device whatever devices saved it (8 GPUs of 2 hosts -> 1 CPU).
        Optimizer state is not read."""
        step, metadata = self._newest_metadata()
        names = exported if exported is not None else list(metadata["params"])
        wanted = {"params": {n: metadata["params"][n] for n in names}}
        stats = {n: metadata["batch_stats"][n] for n in names if metadata.get("batch_stats", {}).get(n)}
        if stats:  # orbax cannot match an empty subtree
            wanted["batch_stats"] = stats
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), wanted)
        payload = self._manager.restore(step, args=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
        out = {}
        for name in names:
            out[name] = {"params": payload["params"][name]}
            if name in payload.get("batch_stats", {}):
                out[name]["batch_stats"] = payload["batch_stats"][name]
        return out

    def parameter_shapes(self, model: str) -> dict[str, tuple[int, ...]]:
        """{parameter path: shape} of `model` in the newest checkpoint, read from metadata only."""
        _, metadata = self._newest_metadata()
        params = metadata["params"]
        if model not in params:
            raise KeyError(f"{self.directory} holds models {sorted(params)}, not {model!r}")
        return _shapes(params[model])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def parameter_mismatch(directory: str, model: str, expected_params) -> str | None:
    """None if the newest checkpoint in `directory` holds `model` with the parameter shapes of
    `expected_params` (arrays or `jax.ShapeDtypeStruct`s); else the first difference, in words."""
    ckpt = StageCheckpoints(directory, save_every_steps=1, keep=1)
    try:
        saved = ckpt.parameter_shapes(model)
    finally:
        ckpt.close()
    expected = _shapes(expected_params)
    for path in sorted(set(saved) | set(expected)):
        if saved.get(path) != expected.get(path):
            return (f"parameter {model}{path} is {saved.get(path, 'absent')} in the checkpoint but "
                    f"{expected.get(path, 'absent')} in the config")
    return None


def check_imported_architectures(imported: Mapping[str, str], expected_params, flags: Mapping[str, str]) -> None:
    """Refuses a stage imported from another run ({stage: directory}) whose parameter shapes differ from
    `expected_params(stage)` (this config's model, e.g. under `jax.eval_shape`): one ValueError line
    naming the config key `flags[stage]` that pointed there and the first differing parameter."""
    for stage, directory in imported.items():
        mismatch = parameter_mismatch(directory, stage, expected_params(stage))
        if mismatch:
            raise ValueError(f"{flags[stage]}: {mismatch}; set config.models.{stage} to the architecture that "
                             f"checkpoint was trained with")
