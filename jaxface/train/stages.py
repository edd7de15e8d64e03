"""Stages: what a recipe hands the core.

A recipe is an ordered list of `Stage`s. A stage names the models it trains (each with its own
optimizer), the frozen models it reads from earlier stages, the data it consumes, its per-device
step function and its length. Rounds (pseudo-labels from the previous round) are stages built in a
loop whose `data` is a function of the earlier stages' results.
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
    """

    name: str
    init: Callable[[jax.Array, Loader], dict[str, Variables]]
    optimizers: Mapping[str, optax.GradientTransformation]
    step: StepFn
    data: BatchSource | Callable[[Loader], BatchSource]
    num_steps: int
    frozen: Callable[[Loader], dict[str, Variables]] = lambda load: {}
    export: Sequence[str] | None = None
    fingerprint: Mapping[str, Any] | None = None

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name {self.name!r} must be letters, digits, '_' or '-'")
        if self.num_steps <= 0:
            raise ValueError(f"stage {self.name}: num_steps must be positive, got {self.num_steps}")
        unknown = set(self.export or ()) - set(self.optimizers)
        if unknown:
            raise ValueError(f"stage {self.name}: export names {sorted(unknown)} that it does not train "
                             f"(trains {sorted(self.optimizers)})")

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
