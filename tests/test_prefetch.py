"""The loop's prefetcher with several threads: the same batches in step order as one thread, errors at
their step, a bounded number of batches ahead, a close that never waits, and the config key."""

import importlib
import re
import threading
import time

import ml_collections
import numpy as np
import pytest

from jaxface.data import degradations, gesture_crops, samplers
from jaxface.data.pipeline import ArraySource
from jaxface.train import devices, loop


class LaterStepsFaster:
    """A batch source that delays each step so that, read by 4 threads, they finish out of step order."""

    def __init__(self, source):
        self.source, self.global_batch_size = source, source.global_batch_size

    def local_batch(self, step, process_index=0, process_count=1):
        time.sleep(0.004 * (3 - step % 4))
        return self.source.local_batch(step, process_index, process_count)


def faces_source():
    """Identity-balanced 4 x 2 tiny faces, degraded per example (blur, noise, JPEG, bicubic): 6 identities,
    so an epoch is one step and threads read different epochs at once."""
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (18, 16, 16, 3), np.uint8), "identity": np.repeat(np.arange(6), 3)}
    degradation = degradations.Degradation(factor=4, noise_sigma=(0.0, 4.0), jpeg_quality=(40, 90))
    augment = degradations.make_augment(degradation)
    return samplers.IdentityBalancedBatches(ArraySource(arrays), arrays["identity"], identities_per_batch=4,
                                            images_per_identity=2, seed=3, augment=augment)


def crops_source():
    """Labeled + unlabeled tiny crops with their weak and strong views (a batch straddles epochs)."""
    rng = np.random.default_rng(1)
    labeled = ArraySource({"image": rng.integers(0, 256, (10, 8, 8, 3), np.uint8), "label": np.arange(10) % 3})
    unlabeled = ArraySource({"image": rng.integers(0, 256, (13, 8, 8, 3), np.uint8)})
    views = dict(flip=1, shift=2, colour_jitter=0.4, noise=8.0, cutout=0.4)
    return gesture_crops.semi_supervised_batches(labeled, unlabeled, batch_size=8, unlabeled_ratio=2, seed=5,
                                                 augment=views)


def read(source, steps, workers):
    prefetch = loop.Prefetcher(source, devices.make_mesh(), steps, workers)
    try:
        return [{k: np.asarray(v) for k, v in prefetch.next().items()} for _ in steps]
    finally:
        prefetch.close()


@pytest.mark.parametrize("make_source", [faces_source, crops_source])
def test_several_threads_give_the_one_thread_batches_in_step_order(make_source):
    steps = range(3, 15)  # a resume: starts past step 0
    one = read(make_source(), steps, workers=1)
    four = read(LaterStepsFaster(make_source()), steps, workers=4)  # a fresh source: its caches start empty
    assert [sorted(b) for b in four] == [sorted(b) for b in one]
    for step, a, b in zip(steps, one, four):
        for key in a:
            assert np.array_equal(a[key], b[key]), f"step {step}, {key}"
    augmented = "lr" if "lr" in one[0] else "unlabeled/image_strong"
    assert not np.array_equal(one[0][augmented], one[1][augmented])  # the steps do differ


class Recording:
    """A batch source that records which steps were asked for and how many reads ran at once."""

    global_batch_size = 8

    def __init__(self, seconds=0.0, fail_at=None, block_from=None):
        self.seconds, self.fail_at, self.block_from = seconds, fail_at, block_from
        self.started, self.running, self.most_running = [], 0, 0
        self.release, self._lock = threading.Event(), threading.Lock()

    def local_batch(self, step, process_index=0, process_count=1):
        with self._lock:
            self.started.append(step)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.block_from is not None and step >= self.block_from:
                self.release.wait(10)
            time.sleep(self.seconds)
            if step == self.fail_at:
                raise OSError(f"unreadable record at step {step}")
            return {"x": np.full((8,), step, np.int32)}
        finally:
            with self._lock:
                self.running -= 1


def wait_for(condition, timeout=2.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.005)


def test_at_most_one_batch_more_than_the_threads_is_read_ahead():
    source = Recording()
    prefetch = loop.Prefetcher(source, devices.make_mesh(), range(100), workers=3)
    try:
        wait_for(lambda: len(source.started) >= 4)
        time.sleep(0.05)  # an unbounded prefetcher would have read on by now
        assert sorted(source.started) == [0, 1, 2, 3]
        assert [int(prefetch.next()["x"][0]) for _ in range(5)] == [0, 1, 2, 3, 4]
        wait_for(lambda: len(source.started) >= 9)
        time.sleep(0.05)
        assert sorted(source.started) == list(range(9))
    finally:
        prefetch.close()


def test_the_threads_read_at_once():
    source = Recording(seconds=0.03)
    read(source, range(8), workers=4)
    assert 2 <= source.most_running <= 4


def test_an_error_reading_step_k_is_raised_at_step_k_and_close_does_not_wait():
    source = Recording(fail_at=5)
    prefetch = loop.Prefetcher(source, devices.make_mesh(), range(2, 20), workers=4)
    try:
        assert [int(prefetch.next()["x"][0]) for _ in range(3)] == [2, 3, 4]
        with pytest.raises(OSError, match="^unreadable record at step 5$"):
            prefetch.next()
    finally:
        prefetch.close()

    blocked = Recording(block_from=1)  # reads that never finish by themselves (a hung file system)
    prefetch = loop.Prefetcher(blocked, devices.make_mesh(), range(10), workers=2)
    try:
        prefetch.next()
        wait_for(lambda: blocked.running == 2)
        t0 = time.perf_counter()
        prefetch.close()
        assert time.perf_counter() - t0 < 0.5
    finally:
        blocked.release.set()  # lets the two running reads end; the queued one was cancelled
    wait_for(lambda: blocked.running == 0)
    assert sorted(blocked.started) == [0, 1, 2]


def test_the_data_workers_key_is_in_every_config_and_a_bad_value_is_one_line():
    for name in ("distill", "multitask", "mutual", "semi_distill", "sr_recognition"):
        module = importlib.import_module(f"configs.{name}")
        for variant in module.VARIANTS:
            config = module.get_config(variant)
            assert loop.LoopOptions.from_config(config).data_workers == config.train.data_workers == 0
    assert loop.LoopOptions().data_workers == 1  # built directly: one thread, the same on every machine
    assert loop.resolve_data_workers(3) == 3
    assert 1 <= loop.resolve_data_workers(0) <= 8

    from jaxface.train import optimizers

    train = dict(batch_size=16, checkpoint_every_steps=4, keep_checkpoints=2, log_every_seconds=10.0, steps=dict(a=3))
    good = dict(train=train, optimizer=optimizers.default_config(warmup_steps=1).to_dict())
    loop.validate_train_config(ml_collections.ConfigDict(good), ("a",))  # the key is optional
    for value in (-1, 1.5, True, "4"):
        config = ml_collections.ConfigDict({**good, "train": {**train, "data_workers": value}})
        message = f"config.train.data_workers={value!r} must be an integer >= 0 (0: automatic)"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            loop.validate_train_config(config, ("a",))


@pytest.mark.parametrize("cores, workers", [(1, 1), (2, 1), (4, 3), (9, 8), (64, 8)])
def test_automatic_data_workers_leave_one_core_to_the_step(monkeypatch, cores, workers):
    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert loop.resolve_data_workers(0) == workers
