"""Batch sources that combine streams or balance identities, each a pure function of (seed, step).

Both are `BatchSource`s (see `jaxface.train.stages`) like `pipeline.ShuffledBatches`: the global batch
of step s is computed from (seed, s) alone, with no iterator state, and each process gathers only its
contiguous slice of it. A resumed run, 1 or 8 devices, 1 or 2 processes: all see the same global batch.

Seeds. Every draw is `np.random.default_rng([seed, ..., crc32(tag)])` with a fixed tag per kind of
draw (a stream's name, "identities", "images", "example"), last so that no two kinds share a stream
(NumPy's SeedSequence reads [a, b] and [a, b, 0] alike, so a trailing counter could collide). Tags use
`zlib.crc32`, never Python's `hash()`, which changes from one interpreter to the next.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any, Callable, Mapping

import numpy as np

from jaxface.data.pipeline import Batch, gather

# fn(batch, rngs) -> batch: random augmentation of this process's rows, rngs[i] = `example_rng` of row i.
Augment = Callable[[Batch, list], Batch]


def _rng(seed: int, *counters: int, tag: str) -> np.random.Generator:
    return np.random.default_rng([seed, *counters, zlib.crc32(tag.encode())])


def example_rng(seed: int, step: int, index: int) -> np.random.Generator:
    """The generator of example `index` (its row in the global batch) at `step`:
    `default_rng([seed, step, index, crc32("example")])`. Augmentation or degradation that draws from it
    is a pure function of (seed, step, example): the same on resume and whatever the process count."""
    return _rng(seed, step, index, tag="example")


def _per_process(batch_size: int, process_count: int, what: str) -> int:
    if batch_size % process_count:
        raise ValueError(f"{what} {batch_size} is not divisible by {process_count} processes")
    return batch_size // process_count


def _augment(augment: Augment | None, batch: Batch, seed: int, step: int, rows: np.ndarray) -> Batch:
    return augment(batch, [example_rng(seed, step, int(r)) for r in rows]) if augment else batch


class _EndlessOrder:
    """Positions [first, first + count) of an endless sequence of epochs over n items, epoch e being
    `permutation(e)`; the last two epochs are cached (a batch may straddle an epoch boundary). Safe to
    call from several threads (the loop's prefetcher reads several steps at once)."""

    def __init__(self, n: int, permutation: Callable[[int], np.ndarray]):
        self.n, self._permutation, self._cache = n, permutation, {}
        self._lock = threading.Lock()  # the cache's check, eviction and insertion happen as one

    def epoch(self, e: int) -> np.ndarray:
        with self._lock:
            if e not in self._cache:
                if len(self._cache) >= 2:
                    del self._cache[min(self._cache)]
                self._cache[e] = self._permutation(e)
            return self._cache[e]

    def take(self, first: int, count: int) -> np.ndarray:
        epochs, offsets = np.divmod(np.arange(first, first + count), self.n)
        out = np.empty(count, np.int64)
        for e in np.unique(epochs):
            out[epochs == e] = self.epoch(int(e))[offsets[epochs == e]]
        return out


class CombinedBatches:
    """A `BatchSource` whose step holds B_1 examples of stream 1, B_2 of stream 2, ... (e.g. labeled +
    unlabeled examples for semi-supervised distillation).

    streams: {name: (source, B)}, a source being an `ArraySource` or a tfds data source. Each stream
    runs its own endless sequence of epochs, independent of the others (streams may differ in length):
    step s reads positions [s*B, (s+1)*B) of it, epoch e being a permutation of its N examples seeded
    by `[seed, e, crc32(name)]`.

    Output: one flat dict, key f"{name}/{feature}" -> [B_name // process_count, ...] (stream names
    must not contain '/'). The core splits the leading axis of every array over the devices, so each
    B must be divisible by the device count, not just their sum `global_batch_size`; `local_batch`
    checks divisibility by the process count.

    augment: optional {name: fn(batch, rngs) -> batch} run on a stream's slice (keys without the
    prefix), rngs[i] = `example_rng(seed, step, row)` with row the example's row in the global batch,
    streams concatenated in the given order (stream j's rows start at B_1 + ... + B_{j-1}).
    transform: optional deterministic fn(batch) -> batch on the combined flat dict of this process.
    """

    def __init__(self, streams: Mapping[str, tuple[Any, int]], *, seed: int,
                 transform: Callable[[Batch], Batch] | None = None, augment: Mapping[str, Augment] | None = None):
        if not streams:
            raise ValueError("CombinedBatches needs at least one stream")
        for name, (source, batch_size) in streams.items():
            if not name or "/" in name:
                raise ValueError(f"stream name {name!r} must be non-empty and contain no '/'")
            if batch_size <= 0 or len(source) == 0:
                raise ValueError(f"stream {name!r}: needs a positive batch size and a non-empty source, "
                                 f"got batch size {batch_size} and {len(source)} examples")
        unknown = set(augment or ()) - set(streams)
        if unknown:
            raise ValueError(f"augment names streams {sorted(unknown)} that are not among {sorted(streams)}")
        self.streams, self.seed, self.transform, self.augment = dict(streams), seed, transform, dict(augment or {})
        self.batch_sizes = {name: b for name, (_, b) in streams.items()}
        self.global_batch_size = sum(self.batch_sizes.values())
        self._orders = {}  # name -> the stream's endless order; epoch e = permutation by [seed, e, crc32(name)]
        for name, (src, _) in streams.items():
            self._orders[name] = _EndlessOrder(len(src), lambda e, n=len(src), tag=name:
                                               _rng(seed, e, tag=tag).permutation(n))

    def indices(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """{name: source indices of this process's slice of the stream's global batch at `step`}."""
        out = {}
        for name, b in self.batch_sizes.items():
            per = _per_process(b, process_count, f"stream {name!r}: batch size")
            out[name] = self._orders[name].take(step * b + process_index * per, per)
        return out

    def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> Batch:
        batch, row0 = {}, 0
        for name, idx in self.indices(step, process_index, process_count).items():
            part = gather(self.streams[name][0], idx)
            rows = row0 + process_index * len(idx) + np.arange(len(idx))
            part = _augment(self.augment.get(name), part, self.seed, step, rows)
            batch.update({f"{name}/{k}": v for k, v in part.items()})
            row0 += self.batch_sizes[name]
        return self.transform(batch) if self.transform else batch


class IdentityBalancedBatches:
    """A `BatchSource` of P identities x K images each (for pair and triplet losses in face recognition).

    ids: [N] identity of each example of `source`. Eligible identities are those with at least K images,
    ranked by sorted label (rank r = r-th smallest eligible label). Epoch e is a permutation of the M
    eligible ranks seeded by `[seed, e, crc32("identities")]`, read P per step: step s is step
    s mod (M // P) of epoch s // (M // P), so no identity repeats within a batch; the M mod P ranks left
    at an epoch's end are skipped (others each epoch). Identity r's K images in epoch e: the first K of a
    permutation of its images seeded by `[seed, e, r, crc32("images")]` (distinct, no replacement).

    Layout, identity-major: rows [j*K, (j+1)*K) of the global batch [P*K, ...] are the j-th identity's.
    With P*K split over devices a device holds whole identities only if K divides the per-device batch;
    that is fine because pair losses gather the global batch (`jaxface.losses.gather_global`).

    augment: optional fn(batch, rngs) -> batch, rngs[i] = `example_rng(seed, step, row)` with row the
    example's row in the global batch. transform: optional deterministic fn(batch) -> batch. Both run
    on this process's slice, augment first.
    """

    def __init__(self, source: Any, ids: np.ndarray, *, identities_per_batch: int, images_per_identity: int,
                 seed: int, transform: Callable[[Batch], Batch] | None = None, augment: Augment | None = None):
        ids = np.asarray(ids)
        p, k = identities_per_batch, images_per_identity
        if ids.shape != (len(source),):
            raise ValueError(f"ids must have shape ({len(source)},) like the source, got {ids.shape}")
        if p <= 0 or k <= 0:
            raise ValueError(f"identities_per_batch and images_per_identity must be positive, got {p} and {k}")
        order = np.argsort(ids, kind="stable")  # examples grouped by identity, in source order within one
        _, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
        keep = counts >= k
        if keep.sum() < p:
            raise ValueError(f"only {keep.sum()} identities have at least {k} images, fewer than the "
                             f"{p} identities per batch")
        self._images = [order[a:a + c] for a, c in zip(starts[keep], counts[keep])]  # per rank
        self.source, self.seed, self.transform, self.augment = source, seed, transform, augment
        self.identities_per_batch, self.images_per_identity = p, k
        self.global_batch_size = p * k
        self.steps_per_epoch = len(self._images) // p
        self._identities = _EndlessOrder(len(self._images), lambda e: _rng(seed, e, tag="identities")
                                         .permutation(len(self._images)))

    def identities(self, step: int) -> np.ndarray:
        """[P] ranks of the identities of step `step`'s global batch, in row order."""
        epoch, s = divmod(step, self.steps_per_epoch)
        return self._identities.epoch(epoch)[s * self.identities_per_batch:(s + 1) * self.identities_per_batch]

    def indices(self, step: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Source indices of this process's slice of the global batch at `step`."""
        per = _per_process(self.global_batch_size, process_count, "batch size")
        epoch, k = step // self.steps_per_epoch, self.images_per_identity
        rows = np.concatenate([_rng(self.seed, epoch, int(r), tag="images").permutation(self._images[r])[:k]
                               for r in self.identities(step)])
        return rows[process_index * per:(process_index + 1) * per]

    def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> Batch:
        idx = self.indices(step, process_index, process_count)
        rows = process_index * len(idx) + np.arange(len(idx))
        batch = _augment(self.augment, gather(self.source, idx), self.seed, step, rows)
        return self.transform(batch) if self.transform else batch
