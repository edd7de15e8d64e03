"""Deterministic batches from a random-access source (a `tfds.data_source`, or arrays in memory).

The example order is a pure function of (seed, step): the global batch of step s holds positions
[s*B, (s+1)*B) of an endless sequence of epochs, each epoch a permutation seeded by (seed, epoch).
Each process reads only its contiguous slice of that global batch. Resuming at step s therefore needs
no iterator state, and the same global batch is seen whatever the number of processes or devices.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np

Batch = dict[str, np.ndarray]


class ArraySource:
    """Examples held in memory: {name: array [N, ...]} with random access by index lists."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all arrays need the same first dimension, got {lengths}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._n

    def gather(self, indices: np.ndarray) -> Batch:
        return {k: v[indices] for k, v in self.arrays.items()}


class SubsetSource(ArraySource):
    """The examples `indices` of an `ArraySource`, without copying its arrays."""

    def __init__(self, base: ArraySource, indices: np.ndarray):
        self.arrays, self._base, self._indices, self._n = base.arrays, base, np.asarray(indices), len(indices)

    def gather(self, indices: np.ndarray) -> Batch:
        return self._base.gather(self._indices[indices])


class DamagedDataError(RuntimeError):
    """A prepared data set on disk cannot be read (truncated or corrupted shard)."""


class PreparedSource:
    """A prepared TFDS split (`tfds.data_source`) whose read errors name the damaged data set and how
    to rebuild it, instead of surfacing as a record-reader traceback in the middle of training."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        import tensorflow_datasets as tfds

        self.name, self.split, self.data_dir = name, split, data_dir
        self._source = tfds.data_source(name, split=split, data_dir=data_dir)
        if len(self):  # a truncated shard fails on its last records: found before a run writes anything
            self.__getitems__([0, len(self) - 1])

    def __len__(self) -> int:
        return len(self._source)

    def _read(self, read):
        try:
            return read()
        except RuntimeError as e:  # array_record / Riegeli report damage as RuntimeError
            directory = os.path.join(self.data_dir or "<TFDS's default data_dir>", *self.name.split("/"))
            raise DamagedDataError(
                f"the prepared data set {self.name} (split {self.split!r}) under {directory} is damaged "
                f"({str(e).splitlines()[0][:160]}); delete {directory} and rerun: it is prepared again") from None

    def __getitem__(self, index: int) -> dict:
        return self._read(lambda: self._source[index])

    def __getitems__(self, indices) -> list:
        return self._read(lambda: self._source.__getitems__(list(indices)))


def gather(source: Any, indices: np.ndarray) -> Batch:
    """Stacks the examples at `indices` of an `ArraySource` or a tfds data source into a batch."""
    if isinstance(source, ArraySource):
        return source.gather(indices)
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(indices.tolist()) if getitems else [source[int(i)] for i in indices]
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def in_memory(source: Any, chunk: int = 1024) -> ArraySource:
    """All examples of a random-access source (e.g. a prepared TFDS split) as one `ArraySource`, read
    in chunks: gathering a batch is then one fancy index per feature instead of decoding records
    (the embedded data sets fit in memory; real ones stay on disk)."""
    if isinstance(source, ArraySource):
        return source
    parts = [gather(source, np.arange(s, min(s + chunk, len(source)))) for s in range(0, len(source), chunk)]
    return ArraySource({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class ShuffledBatches:
    """A `BatchSource` (see `jaxface.train.stages`): shuffled, endless, deterministic batches.

    transform: optional fn(batch) -> batch applied to each process's slice (e.g. target encoding);
    it must be deterministic.
    """

    def __init__(self, source: Any, *, global_batch_size: int, seed: int,
                 transform: Callable[[Batch], Batch] | None = None):
        if global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if len(source) == 0:
            raise ValueError("the training source is empty")
        self.source, self.global_batch_size, self.seed = source, global_batch_size, seed
        self.transform = transform
        self._cached_epoch: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        # One read of the cache: another thread (the loop's prefetcher) may replace it meanwhile.
        cached = self._cached_epoch
        if cached is None or cached[0] != epoch:
            cached = self._cached_epoch = (epoch, epoch_permutation(self.seed, epoch, len(self.source)))
        return cached[1]

    def indices(self, step: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Source indices of this process's slice of the global batch at `step`."""
        if self.global_batch_size % process_count:
            raise ValueError(f"batch size {self.global_batch_size} is not divisible by {process_count} processes")
        per_process = self.global_batch_size // process_count
        first = step * self.global_batch_size + process_index * per_process
        positions = np.arange(first, first + per_process)
        epochs, offsets = np.divmod(positions, len(self.source))
        out = np.empty(per_process, np.int64)
        for epoch in np.unique(epochs):  # a batch spans at most two epochs
            at = epochs == epoch
            out[at] = self._order(int(epoch))[offsets[at]]
        return out

    def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> Batch:
        batch = gather(self.source, self.indices(step, process_index, process_count))
        return self.transform(batch) if self.transform else batch


def ordered_batches(source: Any, batch_size: int, transform: Callable[[Batch], Batch] | None = None,
                    limit: int | None = None) -> Iterator[tuple[Batch, int]]:
    """The source in order, in batches of exactly `batch_size` (the last one padded by repeating its
    final example, so a jitted predict compiles once). Yields (batch, number of real examples)."""
    n = len(source) if limit is None else min(limit, len(source))
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        valid = len(idx)
        idx = np.concatenate([idx, np.full(batch_size - valid, idx[-1])])
        batch = gather(source, idx)
        yield (transform(batch) if transform else batch), valid


def resolve_data_dir(configured: str = "") -> str:
    """Where TFDS data sets are prepared and read: the config's value, else $JAXFACE_DATA_DIR,
    else ~/.cache/jaxface/tfds (absolute)."""
    path = configured or os.environ.get("JAXFACE_DATA_DIR") or os.path.join("~", ".cache", "jaxface", "tfds")
    return os.path.abspath(os.path.expanduser(path))


def check_dataset_name(name: str, allowed: tuple[str, ...], *, key: str = "config.data.name") -> None:
    """Raises a one-line ValueError unless `name` is one of `allowed`, telling apart a data set TFDS
    does not know (with the closest name it does know) from a TFDS data set this recipe cannot read."""
    if name in allowed:
        return
    import difflib

    import tensorflow_datasets as tfds

    known = tfds.list_builders(with_community_datasets=False)
    if name in known:
        raise ValueError(f"{key}={name!r} is a TFDS data set, but this recipe reads only: {', '.join(allowed)}")
    close = difflib.get_close_matches(name, [*allowed, *known], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{key}={name!r} is not a data set TFDS knows{hint}; this recipe reads: {', '.join(allowed)}")
