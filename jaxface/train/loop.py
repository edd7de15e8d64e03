"""The training loop, written once for every recipe.

`run_stages` trains a recipe's stages in order. Per stage it builds the state, resumes from the
stage's newest checkpoint, runs the mapped step function over deterministic batches, logs, checks
for NaN/Inf, validates (`stages.Validation`: metrics, best checkpoint, early stopping), checkpoints,
and marks the stage done. A derived stage is built from earlier ones and saved (`derive_stage`). A
finished stage is skipped on rerun; later stages read finished stages' exported models through
`load(stage_name)`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import json
import math
import os
import signal
import socket
import threading
import time
import zlib
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import multihost_utils

from jaxface.train import checkpoints, devices, optimizers, writers
from jaxface.train.checkpoints import StageCheckpoints, is_done, quiet_orbax
from jaxface.train.stages import Stage
from jaxface.train.state import TrainState
from jaxface.train.validation import StageValidator
from jaxface.train.writers import MetricWriter, Progress


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How the core runs stages (from the config's `train` section).

    data_workers: threads that read the next batches while the step runs (`Prefetcher`); 0 = automatic
    (`resolve_data_workers`: min(8, cores - 1), at least 1). Only the speed depends on it: the batches
    are the same, in the same order, for any number. Configs default to 0 (`from_config`); built
    directly, LoopOptions keeps one thread as before, so code that builds it (tests whose batch
    sources send signals) reads the same number of batches ahead on every machine.
    """

    seed: int = 0
    checkpoint_every_steps: int = 200
    keep_checkpoints: int = 2
    log_every_seconds: float = 10.0
    data_workers: int = 1

    @classmethod
    def from_config(cls, config) -> "LoopOptions":
        """From a recipe config with `seed` and `train.{checkpoint_every_steps, keep_checkpoints,
        log_every_seconds}`, optionally `train.data_workers` (default 0, automatic)."""
        return cls(seed=config.seed, checkpoint_every_steps=config.train.checkpoint_every_steps,
                   keep_checkpoints=config.train.keep_checkpoints, log_every_seconds=config.train.log_every_seconds,
                   data_workers=data_workers(config))


def validate_train_config(config, stage_steps: Sequence[str], models: Sequence[str] = ()) -> None:
    """Checks the `train` and `optimizer` sections every recipe shares; raises ValueError with one line
    naming the key.

    train: positive batch_size, checkpoint_every_steps, keep_checkpoints, log_every_seconds and
    each of `train.steps.<stage_steps>` (exactly those keys), all finite; data_workers (optional) an
    integer >= 0; optimizer: see `optimizers.validate` (including that every stage is longer than the warmup;
    `models`: the networks `optimizer.per_model` may name).
    """
    train = config.train

    def number(key, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"config.train.{key}={value} must be a finite number > 0")

    for key in ("batch_size", "checkpoint_every_steps", "keep_checkpoints", "log_every_seconds"):
        number(key, train[key])
    unknown = sorted(set(train.steps) - set(stage_steps))
    if unknown:
        raise ValueError(f"config.train.steps.{unknown[0]}: unknown; allowed: {', '.join(stage_steps)}")
    for key in stage_steps:
        number(f"steps.{key}", train.steps[key])
    if "optimizer" not in config:
        raise ValueError("config has no 'optimizer' section (see jaxface.train.optimizers.default_config)")
    optimizers.validate(config.optimizer, {key: train.steps[key] for key in stage_steps}, models)
    data_workers(config)
    num_seeds(config)


def data_workers(config) -> int:
    """config.train.data_workers (0, automatic, when absent): see `LoopOptions`."""
    n = config.train.get("data_workers", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"config.train.data_workers={n!r} must be an integer >= 0 (0: automatic)")
    return n


def resolve_data_workers(requested: int) -> int:
    """The prefetcher's thread count: `requested`, or for 0 min(8, cores - 1), at least 1, with `cores` the
    CPU cores this process may use. One core stays with the thread that runs the steps and copies batches to
    the devices (on the 2-core CPU, distill's data through 1 thread: 29.0k / 19.9k examples/s, through 2:
    15.3k / 11.0k, alternating, BENCHMARKS.md); threads beyond the cores cannot run at once and each holds a
    batch; the cap of 8 bounds that memory on large hosts (ask for more with `train.data_workers`)."""
    if requested:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))  # respects taskset / SLURM CPU binding
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


def num_seeds(config) -> int:
    """config.num_seeds (1 when absent): how many seeds `driver.train_and_evaluate` runs."""
    n = config.get("num_seeds", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"config.num_seeds={n!r} must be an integer >= 1")
    return n


class NonFiniteLossError(FloatingPointError):
    """A metric became NaN or Inf; the run stops before anything poisoned is saved."""


class ConfigChangedError(ValueError):
    """A rerun's config changes a stage this workdir already started or finished; nothing was trained."""


class Preempted(SystemExit):
    """SIGTERM (or Ctrl-C) arrived; the current step was checkpointed and the run exits with 128 +
    the signal number, so schedulers see the job as interrupted and restart it."""

    def __init__(self, stage: str, step: int, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.stage, self.step, self.signame = stage, step, signal.Signals(signum).name

    def __str__(self):
        where = (f"in stage {self.stage} at step {self.step}: checkpoint written" if self.step else
                 f"before stage {self.stage}: finished stages are saved")
        return f"interrupted ({self.signame}) {where}; rerun the same command to resume"


class _StopSignals:
    """Turns SIGTERM and a first Ctrl-C into a flag the loop checks between steps, so the step in
    flight is checkpointed before exiting. A second Ctrl-C aborts at once. Main thread only."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    @property
    def raised(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        logging.warning("%s received: checkpointing the current step, then exiting%s", signal.Signals(signum).name,
                        " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else "")

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class WorkdirBusyError(RuntimeError):
    pass


class WorkdirLock:
    """Refuses a second run on the same workdir. An OS file lock, so a crashed or killed run never
    leaves a stale lock behind. Taken by process 0 only (the one that writes)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._file = None

    def __enter__(self):
        if jax.process_index() != 0:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "another process"
            self._file.close()
            raise WorkdirBusyError(f"workdir {os.path.dirname(self.path)} is in use by {owner}; "
                                   f"wait for it to finish or choose another --workdir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}")
        self._file.flush()
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


class StageStore:
    """Gives later stages the exported models of finished stages (read-only, cached).

    `imported` maps stage names to checkpoint directories of stages finished in another run (e.g.
    teachers trained once and reused by many students); they load like this run's own stages.
    `which` is the default checkpoint `load` reads (see `checkpoints.restore_stage_variables`):
    None, each stage's result (best where its validation selects one); 'last' everywhere; or 'best'
    where a stage keeps one (its last elsewhere), as `experiments.evaluate --which` asks.
    """

    def __init__(self, workdir: str, stages: Sequence[Stage], imported: Mapping[str, str] | None = None,
                 which: str | None = None):
        if which not in checkpoints.WHICH:
            raise ValueError(f"which={which!r}; allowed: best, last")
        self.workdir, self.which = workdir, which
        self._stages = {s.name: s for s in stages}
        self._imported = {name: os.path.abspath(d) for name, d in (imported or {}).items()}
        clash = sorted(set(self._stages) & set(self._imported))
        if clash:
            raise ValueError(f"stages {clash} are both trained here and imported; drop one of the two")
        self._cache: dict[tuple, dict] = {}

    def stage_names(self) -> list[str]:
        """This run's stages in order, then the imported ones."""
        return list(self._stages) + [n for n in self._imported if n not in self._stages]

    def checkpoint_dir(self, name: str) -> str:
        if name in self._imported:
            return self._imported[name]
        return os.path.join(os.path.abspath(self.workdir), "checkpoints", name)

    def is_done(self, name: str) -> bool:
        """Whether stage `name` finished, as process 0 sees it (the same answer on every process)."""
        return devices.main_process_value(is_done(self.checkpoint_dir(name)))

    def summary(self, name: str) -> dict:
        """The DONE marker of a finished stage: steps, final metrics, fingerprint, and its selection
        (`best`, `stopped_early_at`) or derived decision (`decision`)."""
        return checkpoints.read_done_marker(self.checkpoint_dir(name))

    def load(self, name: str, which: str | None = None) -> dict:
        """{model: {'params', 'batch_stats'?}} of a finished stage's exported models (host arrays).
        which: 'best' / 'last' / None (the store's default, see the class docstring)."""
        if name not in self._stages and name not in self._imported:
            raise KeyError(f"unknown stage {name!r}; stages are {list(self._stages) + list(self._imported)}")
        if which is None and self.which == "best":  # best where one is kept
            which = "best" if devices.main_process_value(checkpoints.has_best(self.checkpoint_dir(name))) else "last"
        which = which or self.which
        if (name, which) not in self._cache:
            if not self.is_done(name):
                raise RuntimeError(f"stage {name!r} is not finished; a stage can only load earlier stages")
            export = self._stages[name].export if name in self._stages else None
            self._cache[name, which] = checkpoints.restore_stage_variables(
                self.checkpoint_dir(name), list(export) if export is not None else None, which)
        return self._cache[name, which]


def seed_key(seed: int) -> jax.Array:
    """The root key of a run. 'rbg' keys make initialising a network several times cheaper to compile
    than the default threefry (15 s -> 4 s for a small detector on a 2-core CPU)."""
    return jax.random.key(seed, impl="rbg")


def _stage_key(seed: int, name: str) -> jax.Array:
    return jax.random.fold_in(seed_key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class Prefetcher:
    """Reads and shards the batches of `steps` ahead of the loop with `workers` threads.

    `next()` returns them in step order, each `source.local_batch(step, process_index, process_count)`
    sharded over `mesh`: a pure function of the step, so the number of threads changes only the speed
    (sources must allow `local_batch` of different steps at once). At most `workers + 1` batches are
    being read or waiting at any time (host and device memory). An error raised reading a step is
    raised by the `next()` of that step. `close()` returns at once: reads not started are cancelled,
    running ones (one batch per thread at most) finish in the background and are dropped.
    """

    def __init__(self, source, mesh, steps: range, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers={workers} must be >= 1")
        self._source, self._mesh = source, mesh
        self._steps = iter(steps)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch")
        # one more than the threads: a thread that finishes early starts the next read at once
        self._queue = [self._submit() for _ in range(workers + 1)]

    def _submit(self):
        step = next(self._steps, None)
        if step is None:
            return None
        return self._pool.submit(self._load, step)

    def _load(self, step):
        local = self._source.local_batch(step, jax.process_index(), jax.process_count())
        return devices.shard_batch(local, self._mesh)

    def next(self):
        """The next step's batch, waiting for it if it is not read yet."""
        future = self._queue.pop(0)  # futures are queued in step order, whatever order they finish in
        self._queue.append(self._submit())
        return future.result()

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)


def _first_non_finite(metrics: dict) -> tuple[str, float]:
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return next(((k, v) for k, v in host.items() if not math.isfinite(v)), ("?", float("nan")))


def train_stage(stage: Stage, store: StageStore, writer: MetricWriter, mesh, options: LoopOptions,
                stop: _StopSignals) -> dict:
    """Trains one stage to its end (resuming if it has checkpoints). Returns its summary.

    Every decision that ends or saves (stop, NaN, checkpoint) is taken at the same step on every
    process: from the step's `control` output (identical everywhere) or from the step count, never
    from wall-clock time or a process's own signal, so multi-host runs cannot diverge into a deadlock.
    """
    ckpt = StageCheckpoints(store.checkpoint_dir(stage.name), save_every_steps=options.checkpoint_every_steps,
                            keep=options.keep_checkpoints)
    try:
        key = _stage_key(options.seed, stage.name)
        init_key, state_key = jax.random.split(key)
        variables = stage.init(init_key, store.load)
        state = TrainState.create(variables=variables, tx=stage.optimizers, rng=state_key)
        state = devices.replicate(state, mesh)
        state = ckpt.restore_latest(state)
        frozen = devices.replicate(stage.frozen(store.load), mesh)
        start = int(jax.device_get(state.step))
        validator = None if stage.validation is None else StageValidator(
            stage, ckpt.directory, store.load, mesh, state.variables(stage.validation.model), start)
        data = stage.resolve_data(store.load)
        devices.local_batch_size(data.global_batch_size, mesh)  # fails early on an indivisible batch
        step_fn = devices.compile_step(stage.step, mesh)
        sync_each_step = devices.needs_step_sync(mesh)
        stop_flags = devices.stop_flags(mesh)

        if stage.fingerprint is not None and jax.process_index() == 0 and start == 0:
            checkpoints.write_fingerprint(ckpt.directory, dict(stage.fingerprint))
        if start:
            logging.info("[%s] resuming at step %d of %d", stage.name, start, stage.num_steps)
        writer.record_start(stage.name, start, stage.num_steps, mesh.devices.size)
        progress = Progress(stage.num_steps, start, data.global_batch_size)
        pending: list[tuple[int, dict]] = []  # metrics still on device, fetched in groups
        last: dict[str, float] = {}
        unchecked = None  # (step, metrics, control) of the newest step whose control is not yet read
        stopped_early_at = None

        def flush():
            nonlocal last
            if not pending:
                return
            rows = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(pending)]
            pending.clear()
            writer.write(stage.name, rows)
            last = rows[-1][1]

        def check_unchecked() -> bool:
            """Reads the control of the newest unchecked step: raises on NaN/Inf, returns 'stop'."""
            nonlocal unchecked
            if unchecked is None:
                return False
            step, metrics, control = unchecked
            unchecked = None
            control = jax.device_get(control)
            if not control["finite"]:
                flush()  # the poisoned row is logged too
                name, value = _first_non_finite(metrics)
                raise NonFiniteLossError(f"stage {stage.name}: metric {name!r} is {value} at step {step}; "
                                         f"the newest checkpoint before it is kept")
            return bool(control["stop"])

        def save(force: bool) -> bool:
            """Checkpoints the current state (never a non-finite one); returns whether to stop."""
            stopping = check_unchecked()
            flush()
            if not bool(_all_finite((state.params, state.batch_stats))):
                raise NonFiniteLossError(f"stage {stage.name}: parameters or BatchNorm statistics are not finite "
                                         f"at step {int(jax.device_get(state.step))}; not saving them")
            ckpt.save(state, force=force or stopping)
            return stopping

        def preempted(step: int):
            ckpt.wait()
            return Preempted(stage.name, step, stop.received or signal.SIGTERM)

        prefetch = Prefetcher(data, mesh, range(start, stage.num_steps), resolve_data_workers(options.data_workers))
        try:
            for step in range(start, stage.num_steps):
                batch = prefetch.next()
                state, metrics, control = step_fn(state, frozen, batch, stop_flags[stop.raised])
                if sync_each_step:
                    jax.block_until_ready(state)
                done = step + 1
                pending.append((done, metrics))
                # Read the previous step's control only now, so one step stays queued on accelerators.
                stop_now = check_unchecked()
                unchecked = (done, metrics, control)
                if stop_now and done < stage.num_steps:  # in the last step: finish, stop at the boundary
                    save(force=True)
                    raise preempted(done)
                if validator is not None and validator.due(done, stage.num_steps):
                    if check_unchecked() and done < stage.num_steps:  # never evaluate a non-finite state
                        save(force=True)
                        raise preempted(done)
                    validation_metrics, stop_early = validator(done, state)
                    pending[-1] = (done, {**pending[-1][1], **validation_metrics})
                    if stop_early and done < stage.num_steps:
                        stopped_early_at = done
                        break
                if step == start:  # first step compiles; measure speed from here on
                    flush()
                    progress.restart_clock(done)
                if done % options.checkpoint_every_steps == 0 and done < stage.num_steps:
                    if save(force=False):
                        raise preempted(done)
                # Only process 0 logs; the others fetch their metrics at checkpoint steps only.
                if jax.process_index() == 0 and (progress.due(options.log_every_seconds) or done == stage.num_steps):
                    flush()
                    logging.info(progress.line(stage.name, done, last))
        except BaseException:
            try:  # the steps trained before a crash stay in metrics.jsonl (a resume replays them again)
                flush()
            except Exception as e:  # noqa: BLE001  (the original error matters more)
                logging.warning("could not log the last steps' metrics: %s", e)
            raise
        finally:
            prefetch.close()
        save(force=True)  # a stop asked for in the last step ends the run at the next stage boundary
        summary = {"stage": stage.name, "steps": stage.num_steps, "final_metrics": last,
                   "fingerprint": None if stage.fingerprint is None else dict(stage.fingerprint)}
        if validator is not None:
            summary.update(validator.summary(), stopped_early_at=stopped_early_at)
        ckpt.mark_done(summary)
        return summary
    finally:
        ckpt.close()


def derive_stage(stage: Stage, store: StageStore, mesh) -> dict:
    """Builds a derived stage's models from finished stages, saves them and marks the stage done.
    Process 0's models and decision are used everywhere, so every process saves the same result."""
    variables, decision = stage.derive(store.load, mesh)
    variables = jax.device_get(variables)
    if jax.process_count() > 1:
        variables = multihost_utils.broadcast_one_to_all(variables)
    decision = devices.main_process_json(json.loads(json.dumps(decision)))
    ckpt = StageCheckpoints(store.checkpoint_dir(stage.name), save_every_steps=1, keep=1)
    try:
        if stage.fingerprint is not None and jax.process_index() == 0:
            checkpoints.write_fingerprint(ckpt.directory, dict(stage.fingerprint))
        ckpt.save_variables(0, devices.replicate(variables, mesh))
        summary = {"stage": stage.name, "derived": True, "decision": decision,
                   "fingerprint": None if stage.fingerprint is None else dict(stage.fingerprint)}
        ckpt.mark_done(summary)
    finally:
        ckpt.close()
    logging.info("[%s] derived: %s", stage.name, json.dumps(decision)[:500])
    return summary


def check_fingerprints(stages: Sequence[Stage], store: StageStore) -> None:
    """Raises ConfigChangedError (on every process) if a stage this workdir already started or finished
    was started with another fingerprint; process 0's view decides."""
    problem = ""
    if jax.process_index() == 0:
        for stage in stages:
            saved = checkpoints.read_fingerprint(store.checkpoint_dir(stage.name))
            changes = [] if saved is None or stage.fingerprint is None else checkpoints.fingerprint_changes(
                saved, dict(stage.fingerprint))
            if changes:
                more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
                problem = (f"stage {stage.name} in {store.workdir} was trained with another config: "
                           f"{'; '.join(changes[:3])}{more}; rerun with the original config, or choose a new "
                           f"--workdir to train with this one")
                break
    if devices.main_process_value(bool(problem)):
        raise ConfigChangedError(problem or "a stage of this workdir was trained with another config (see process 0)")


def run_stages(stages: Sequence[Stage], *, workdir: str, options: LoopOptions = LoopOptions(),
               mesh=None, imported: Mapping[str, str] | None = None, config_json: str | None = None) -> StageStore:
    """Trains every stage in order (skipping finished ones) and returns the store of their results.

    imported: {stage name: checkpoint directory} of stages finished in other runs, which `load`
    reads like this run's own (see `checkpoints.finished_stage_dir`).
    config_json: the run's config, written to `<workdir>/config.json` once every stage's fingerprint
    matches what the workdir holds (a refused rerun leaves the workdir's record as it was).
    """
    quiet_orbax()
    mesh = devices.make_mesh() if mesh is None else mesh
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    store = StageStore(workdir, stages, imported)
    check_fingerprints(stages, store)
    if config_json is not None and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        writers.write_text_atomically(os.path.join(workdir, "config.json"), config_json)
    writer = MetricWriter(workdir)
    try:
        with _StopSignals() as stop:
            for stage in stages:
                if store.is_done(stage.name):
                    logging.info("[%s] finished earlier: skipped", stage.name)
                    continue
                if devices.any_process(stop.raised):  # a signal that came during the previous stage
                    raise Preempted(stage.name, 0, stop.received or signal.SIGTERM)
                t0 = time.perf_counter()
                if stage.is_derived:
                    derive_stage(stage, store, mesh)
                    continue
                logging.info("[%s] training %d steps on %s", stage.name, stage.num_steps, devices.describe(mesh))
                train_stage(stage, store, writer, mesh, options, stop)
                logging.info("[%s] done in %.1f s", stage.name, time.perf_counter() - t0)
    finally:
        writer.close()
    return store
