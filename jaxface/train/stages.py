"""Stages: what a recipe hands the core.

A recipe is an ordered list of `Stage`s. A stage names the models it trains (each with its own
optimizer), the frozen models it reads from earlier stages, the data it consumes, its per-device
step function and its length, and optionally a `Validation` run during training (metrics logged,
best checkpoint kept, early stopping). Rounds (pseudo-labels from the previous round) are stages
built in a loop whose `data` is a function of the earlier stages' results. A derived stage trains
nothing: its models are built from earlier stages (choose the better of two, compose a cascade).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import numpy as np
import optax

from jaxface.train.state import Variables

# load(stage_name) -> {model_name: {'params': ..., 'batch_stats': ...}} of a finished stage's exported models.
Loader = Callable[[str], dict[str, Variables]]


class BatchSource(Protocol):
    """Deterministic batches: the batch of a step is a pure function of (seed, step).

    `local_batch(step, process_index, process_count)` returns this process's contiguous slice
    of the global batch as {name: np.ndarray [global_batch_size // process_count, ...]}.
    """

    global_batch_size: int

    def local_batch(self, step: int, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        ...


# (state, frozen, batch, rng) -> (state, metrics); per device, see `devices.compile_step`.
StepFn = Callable[[Any, Any, dict, jax.Array], tuple[Any, dict]]
# (variables, batch) -> {name: array [B, ...]}: a pure, jittable prediction of one model.
PredictFn = Callable[[Any, dict], dict]
# (load, mesh) -> ({model: variables}, decision): a derived stage's models and what it decided (JSON-able).
DeriveFn = Callable[[Loader, Any], tuple[dict[str, Variables], dict]]


@dataclasses.dataclass(frozen=True)
class Validation:
    """Evaluation of one trained model of a stage on a held-out split while it trains.

    Every `every_steps` steps and at the stage's last step the core runs `predict` over `source`
    data-parallel (`jaxface.train.predict.Predictor`), computes `metrics(outputs)` on the host and logs
    them as `val/<metric>` next to the training losses (metrics.jsonl, TensorBoard).

    Attributes:
      model: the trained model to evaluate (a key of the stage's `optimizers`).
      predict: its pure predict function, (variables, batch) -> {name: [B, ...]}.
      source: random-access source of the validation split (`len` and `gather`, see
        `pipeline.ordered_batches`), or load -> source when it depends on earlier stages.
      metrics: {output or input name: np.ndarray [N, ...]} -> {metric: float}, on the host; it receives
        the predictions and the batch fields named in `keep_inputs` (labels).
      keep_inputs: batch fields passed to `metrics` with the predictions.
      every_steps: evaluation period in steps (the last step is always evaluated).
      batch_size: global evaluation batch size (a multiple of the device count).
      limit: evaluate the first `limit` examples only (None: the whole split).
      select: the metric that picks the stage's best checkpoint, kept besides the latest; the stage's
        result (what `load(stage)` returns) is then its best model. '' keeps no best checkpoint.
      mode: 'max' or 'min': whether a larger or smaller `select` is better.
      patience: stop the stage after this many evaluations in a row without an improvement of more
        than `min_delta` (0: never stop early). The decision is process 0's, so all processes agree.
    """

    model: str
    predict: PredictFn
    source: Any
    metrics: Callable[[dict], Mapping[str, float]]
    every_steps: int
    batch_size: int
    keep_inputs: Sequence[str] = ()
    limit: int | None = None
    select: str = ""
    mode: str = "max"
    patience: int = 0
    min_delta: float = 0.0

    def __post_init__(self):
        if self.every_steps <= 0:
            raise ValueError(f"validation every_steps must be positive, got {self.every_steps}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"validation mode {self.mode!r}; allowed: max, min")
        if self.patience < 0 or self.min_delta < 0:
            raise ValueError(f"validation patience ({self.patience}) and min_delta ({self.min_delta}) must be >= 0")
        if self.patience and not self.select:
            raise ValueError("early stopping (patience > 0) needs a `select` metric to watch")

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` beats `best` (None: nothing yet) by more than `min_delta`."""
        if best is None:
            return True
        return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
      name: directory-safe name; its checkpoints live in `<workdir>/checkpoints/<name>`.
      init: (rng, load) -> {model_name: variables} for the models this stage trains. It may start
        from an earlier stage through `load(...)` (curricula, rounds).
      optimizers: {model_name: optax transformation}, one per trained model.
      step: the per-device step function.
      data: a `BatchSource`, or load -> BatchSource when the data depends on earlier stages
        (e.g. labels predicted by the previous round).
      num_steps: optimizer steps of this stage.
      frozen: load -> {name: variables} of read-only models (teachers). They are passed to the step,
        never updated and never saved again.
      export: the trained models later stages may load (default: all). Training-only helpers such as
        feature adapters are left out here and are dropped at export.
      fingerprint: {config key: value} of everything that shapes this stage's result, including
        what the stages it reads depend on (see `config_fingerprint`). It is stored with the stage's
        checkpoints; a rerun whose fingerprint differs is refused instead of mixing two configs in
        one workdir. Keys that do not shape the result (logging period, checkpoint interval) stay out.
      validation: evaluation during training, best checkpoint and early stopping (`Validation`).
      derive: makes this a derived stage, which trains nothing (leave init, optimizers, step, data
        and num_steps unset): (load, mesh) -> ({model: variables}, decision). Its models are saved
        and it is marked done like any stage; `decision` (e.g. which candidate won, by how much) goes
        into its DONE marker and the run's results.json. Process 0's models and decision are used
        on every process.
    """

    name: str
    init: Callable[[jax.Array, Loader], dict[str, Variables]] | None = None
    optimizers: Mapping[str, optax.GradientTransformation] = dataclasses.field(default_factory=dict)
    step: StepFn | None = None
    data: BatchSource | Callable[[Loader], BatchSource] | None = None
    num_steps: int = 0
    frozen: Callable[[Loader], dict[str, Variables]] = lambda load: {}
    export: Sequence[str] | None = None
    fingerprint: Mapping[str, Any] | None = None
    validation: Validation | None = None
    derive: DeriveFn | None = None

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name {self.name!r} must be letters, digits, '_' or '-'")
        if self.derive is not None:
            extra = [f for f in ("init", "step", "data", "validation") if getattr(self, f) is not None]
            extra += ["optimizers"] * bool(self.optimizers) + ["num_steps"] * bool(self.num_steps)
            if extra:
                raise ValueError(f"stage {self.name}: a derived stage trains nothing; drop {', '.join(extra)}")
            return
        missing = [f for f in ("init", "step", "data") if getattr(self, f) is None]
        missing += ["optimizers"] * (not self.optimizers)
        if missing:
            raise ValueError(f"stage {self.name}: a training stage needs {', '.join(missing)} (or `derive`)")
        if self.num_steps <= 0:
            raise ValueError(f"stage {self.name}: num_steps must be positive, got {self.num_steps}")
        unknown = set(self.export or ()) - set(self.optimizers)
        if unknown:
            raise ValueError(f"stage {self.name}: export names {sorted(unknown)} that it does not train "
                             f"(trains {sorted(self.optimizers)})")
        if self.validation is not None and self.validation.model not in self.optimizers:
            raise ValueError(f"stage {self.name}: validation model {self.validation.model!r} is not trained here "
                             f"(trains {sorted(self.optimizers)})")

    @property
    def is_derived(self) -> bool:
        return self.derive is not None

    def resolve_data(self, load: Loader) -> BatchSource:
        return self.data if hasattr(self.data, "local_batch") else self.data(load)


def config_fingerprint(config, include: Sequence[str]) -> dict[str, Any]:
    """{dotted key: value} of every leaf of `config` (a ConfigDict or nested dict) at or under the
    dotted keys in `include` (e.g. 'models.student', 'train.steps.student', 'seed'), sorted, with
    tuples as lists so it survives a JSON round trip. A key in `include` that is missing raises KeyError."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node):
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = list(node) if isinstance(node, tuple) else node

    walk("", tree)
    out = {}
    for wanted in include:
        hits = {k: v for k, v in flat.items() if k == wanted or k.startswith(wanted + ".")}
        if not hits:
            raise KeyError(f"config has no key {wanted!r} to fingerprint")
        out.update(hits)
    return dict(sorted(out.items()))
