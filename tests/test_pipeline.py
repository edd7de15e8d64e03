"""`ShuffledBatches`: each process's slice of step s's global batch, epochs as permutations, and the
batch of step s as a pure function of (seed, s). NumPy only: nothing here compiles."""

import numpy as np
import pytest

from jaxface.data.pipeline import ArraySource, ShuffledBatches, epoch_permutation


def source(n):
    """n examples whose 'id' is their index, so a gathered batch shows which examples it holds."""
    return ArraySource({"id": np.arange(n), "x": np.arange(n, dtype=np.float32)[:, None] * np.ones(3, np.float32)})


def endless_order(seed, n, epochs):
    """The example sequence the class documents: epoch 0's permutation, then epoch 1's, ..."""
    return np.concatenate([epoch_permutation(seed, e, n) for e in range(epochs)])


@pytest.mark.parametrize("n, global_batch, process_count", [
    (10, 4, 1), (10, 4, 2), (10, 4, 4), (13, 6, 3), (13, 6, 2), (7, 16, 8), (24, 8, 2)])
def test_process_slices_concatenate_to_the_global_batch(n, global_batch, process_count):
    batches = ShuffledBatches(source(n), global_batch_size=global_batch, seed=3)
    steps = 2 * n // global_batch + 2  # past two epoch boundaries
    order = endless_order(3, n, epochs=(steps + 1) * global_batch // n + 1)
    per_process = global_batch // process_count
    for step in range(steps):
        expected = order[step * global_batch:(step + 1) * global_batch]
        parts = [batches.indices(step, p, process_count) for p in range(process_count)]
        assert all(len(part) == per_process for part in parts), (step, [len(p) for p in parts])
        np.testing.assert_array_equal(np.concatenate(parts), expected, err_msg=f"step {step}")
        np.testing.assert_array_equal(batches.indices(step), expected, err_msg=f"step {step}, one process")
        # the gathered slice holds exactly those examples
        for p, part in enumerate(parts):
            np.testing.assert_array_equal(batches.local_batch(step, p, process_count)["id"], part)


def test_indivisible_batch_is_refused():
    with pytest.raises(ValueError, match="batch size 6 is not divisible by 4 processes"):
        ShuffledBatches(source(10), global_batch_size=6, seed=0).indices(0, 0, 4)


@pytest.mark.parametrize("n, global_batch", [(10, 4), (12, 4), (5, 8), (13, 6)])
def test_each_epoch_is_a_permutation_and_epochs_are_reshuffled(n, global_batch):
    batches = ShuffledBatches(source(n), global_batch_size=global_batch, seed=1)
    epochs = 4
    steps = -(-epochs * n // global_batch)  # ceil: enough batches to cover `epochs` epochs
    seen = np.concatenate([batches.indices(s) for s in range(steps)])[:epochs * n].reshape(epochs, n)
    for e in range(epochs):
        np.testing.assert_array_equal(np.sort(seen[e]), np.arange(n), err_msg=f"epoch {e}")
    # a fresh order each epoch, not one permutation repeated
    assert len({tuple(row) for row in seen}) == epochs


def test_batch_of_a_step_is_a_pure_function_of_seed_and_step():
    n, global_batch = 11, 4
    steps = [0, 1, 2, 3, 5, 8, 13, 30]
    first = ShuffledBatches(source(n), global_batch_size=global_batch, seed=7)
    forward = {s: first.indices(s) for s in steps}
    # the same object asked again, out of order (across epoch boundaries), and a fresh object asked backwards
    again = {s: first.indices(s) for s in reversed(steps)}
    fresh = ShuffledBatches(source(n), global_batch_size=global_batch, seed=7)
    backward = {s: fresh.indices(s) for s in reversed(steps)}
    for s in steps:
        np.testing.assert_array_equal(again[s], forward[s], err_msg=f"step {s}, same object")
        np.testing.assert_array_equal(backward[s], forward[s], err_msg=f"step {s}, fresh object")
        np.testing.assert_array_equal(fresh.local_batch(s)["x"], source(n).arrays["x"][forward[s]])
    # the values themselves: positions [4s, 4s+4) of the documented sequence
    order = endless_order(7, n, epochs=12)
    for s in steps:
        np.testing.assert_array_equal(forward[s], order[4 * s:4 * s + 4], err_msg=f"step {s}")
    # another seed gives other batches
    other = ShuffledBatches(source(n), global_batch_size=global_batch, seed=8)
    other_order = endless_order(8, n, epochs=12)
    for s in steps:
        np.testing.assert_array_equal(other.indices(s), other_order[4 * s:4 * s + 4], err_msg=f"seed 8, step {s}")
    assert not np.array_equal(np.concatenate([other.indices(s) for s in steps]),
                              np.concatenate([forward[s] for s in steps]))


def test_a_split_held_in_memory_gives_the_same_batches_as_on_disk(gestures_data_dir):
    from jaxface.data import synthetic_gestures
    from jaxface.data.pipeline import in_memory

    on_disk = synthetic_gestures.data_source("smoke", "train", gestures_data_dir)
    held = in_memory(on_disk, chunk=7)  # chunks that do not divide the split
    assert isinstance(held, ArraySource) and len(held) == len(on_disk)
    a = ShuffledBatches(on_disk, global_batch_size=16, seed=3)
    b = ShuffledBatches(held, global_batch_size=16, seed=3)
    for step in (0, 5, len(on_disk) // 16 + 1):  # the last one straddles an epoch boundary
        x, y = a.local_batch(step, 1, 2), b.local_batch(step, 1, 2)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k
