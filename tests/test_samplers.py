"""`CombinedBatches`, `IdentityBalancedBatches` and `example_rng`: process slices, the batch of step s as
a pure function of (seed, s), per-stream epochs, P x K identity layout. NumPy only: nothing compiles."""

import numpy as np
import pytest

from jaxface.data.pipeline import ArraySource
from jaxface.data.samplers import CombinedBatches, IdentityBalancedBatches, example_rng


def source(n, offset=0):
    """n examples whose 'id' is their index (+ offset, to tell streams apart)."""
    return ArraySource({"id": np.arange(n) + offset, "x": np.arange(n, dtype=np.float32)[:, None] * np.ones(2)})


def combined(seed=0, sizes=(("labeled", 10, 4), ("unlabeled", 23, 6)), **kw):
    return CombinedBatches({name: (source(n, 1000 * i), b) for i, (name, n, b) in enumerate(sizes)}, seed=seed, **kw)


# identities 0..11 with these image counts; K = 3 makes 0, 1, 5, 9 ineligible (8 eligible)
COUNTS = [1, 2, 3, 4, 5, 2, 8, 3, 3, 0, 6, 7]
IDS = np.random.default_rng(0).permutation(np.repeat(np.arange(12) * 10, COUNTS))  # labels 0, 10, ..., 110
ELIGIBLE = {10 * i for i, c in enumerate(COUNTS) if c >= 3}


def balanced(seed=0, p=4, k=3, ids=IDS, **kw):
    src = ArraySource({"id": np.arange(len(ids)), "identity": ids, "x": np.arange(len(ids))[:, None] * np.ones(2)})
    return IdentityBalancedBatches(src, ids, identities_per_batch=p, images_per_identity=k, seed=seed, **kw)


def global_batch(batches, step):
    return batches.local_batch(step, 0, 1)


def assert_batches_equal(a, b, msg=""):
    assert a.keys() == b.keys(), msg
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{msg} {key}")


# ---------------------------------------------------------------------------------------------- both

@pytest.mark.parametrize("make", [combined, balanced], ids=["combined", "balanced"])
@pytest.mark.parametrize("process_count", [1, 2])
def test_process_slices_concatenate_to_the_global_batch(make, process_count):
    batches = make()
    for step in range(7):  # past epoch boundaries of every stream
        whole = global_batch(batches, step)
        parts = [batches.local_batch(step, p, process_count) for p in range(process_count)]
        for key, value in whole.items():
            assert all(len(part[key]) == len(value) // process_count for part in parts), (step, key)
            np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), value,
                                          err_msg=f"step {step}, {key}")


def test_process_slices_of_each_stream():
    batches = combined(sizes=(("a", 10, 4), ("b", 13, 8)))
    for process_count in (1, 2, 4):
        for step in range(5):
            parts = [batches.local_batch(step, p, process_count) for p in range(process_count)]
            for key, b in (("a/id", 4), ("b/id", 8)):
                assert [len(part[key]) for part in parts] == [b // process_count] * process_count
                np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]),
                                              global_batch(batches, step)[key], err_msg=f"{process_count} {key}")


def test_process_slices_of_identity_batches():
    batches = balanced(p=4, k=2)  # 8 rows, blocks split across processes when process_count = 8
    for process_count in (2, 4, 8):
        for step in range(6):
            parts = [batches.local_batch(step, p, process_count)["id"] for p in range(process_count)]
            np.testing.assert_array_equal(np.concatenate(parts), global_batch(batches, step)["id"])


@pytest.mark.parametrize("make", [combined, balanced], ids=["combined", "balanced"])
def test_batch_of_a_step_is_a_pure_function_of_seed_and_step(make):
    steps = [0, 1, 2, 3, 5, 8, 13, 30]
    first = make(seed=7)
    forward = {s: global_batch(first, s) for s in steps}
    again = {s: global_batch(first, s) for s in reversed(steps)}
    fresh = make(seed=7)
    backward = {s: fresh.local_batch(s, 1, 2) for s in reversed(steps)}  # a fresh object, backwards, process 1
    for s in steps:
        assert_batches_equal(again[s], forward[s], f"step {s}, same object")
        for key, value in backward[s].items():
            np.testing.assert_array_equal(value, forward[s][key][len(value):], err_msg=f"step {s}, fresh")
    other = make(seed=8)
    for key in forward[0]:
        assert not np.array_equal(np.concatenate([global_batch(other, s)[key] for s in steps]),
                                  np.concatenate([forward[s][key] for s in steps])), key


# ------------------------------------------------------------------------------------ CombinedBatches

def test_combined_keys_shapes_and_values():
    batches = combined()
    assert batches.global_batch_size == 10 and batches.batch_sizes == {"labeled": 4, "unlabeled": 6}
    batch, idx = batches.local_batch(3, 1, 2), batches.indices(3, 1, 2)
    assert sorted(batch) == ["labeled/id", "labeled/x", "unlabeled/id", "unlabeled/x"]
    assert batch["labeled/x"].shape == (2, 2) and batch["unlabeled/x"].shape == (3, 2)
    np.testing.assert_array_equal(batch["labeled/id"], idx["labeled"])
    np.testing.assert_array_equal(batch["unlabeled/id"], idx["unlabeled"] + 1000)


@pytest.mark.parametrize("n, b", [(10, 4), (12, 4), (7, 3), (5, 8)])
def test_each_stream_epoch_is_a_permutation_and_epochs_are_reshuffled(n, b):
    batches = combined(sizes=(("small", n, b), ("big", 29, 5)))
    epochs = 4
    for name, size, bs in (("small", n, b), ("big", 29, 5)):
        steps = -(-epochs * size // bs)
        seen = np.concatenate([batches.indices(s)[name] for s in range(steps)])[:epochs * size]
        seen = seen.reshape(epochs, size)
        for e in range(epochs):
            np.testing.assert_array_equal(np.sort(seen[e]), np.arange(size), err_msg=f"{name} epoch {e}")
        assert len({tuple(row) for row in seen}) == epochs, f"{name}: one permutation repeated"


def test_streams_are_independent():
    a_alone = CombinedBatches({"a": (source(10), 4)}, seed=3)
    both = CombinedBatches({"b": (source(10), 4), "a": (source(10), 2 * 2)}, seed=3)
    reordered = CombinedBatches({"a": (source(10), 4), "b": (source(10), 6)}, seed=3)
    for s in range(8):
        # a stream's order depends on (seed, its name, step) only: not on other streams or their order
        np.testing.assert_array_equal(both.indices(s)["a"], a_alone.indices(s)["a"], err_msg=f"step {s}")
        np.testing.assert_array_equal(reordered.indices(s)["a"], a_alone.indices(s)["a"], err_msg=f"step {s}")
    # two streams over the same source and batch size draw different orders
    assert not np.array_equal(np.concatenate([both.indices(s)["a"] for s in range(5)]),
                              np.concatenate([both.indices(s)["b"] for s in range(5)]))


def test_indivisible_stream_batch_is_refused():
    batches = combined(sizes=(("labeled", 10, 6), ("unlabeled", 20, 2)))  # sum 8 divides by 4, 6 does not
    with pytest.raises(ValueError, match=r"^stream 'labeled': batch size 6 is not divisible by 4 processes$"):
        batches.local_batch(0, 0, 4)
    with pytest.raises(ValueError, match="contain no '/'"):
        CombinedBatches({"a/b": (source(4), 2)}, seed=0)


# ---------------------------------------------------------------------------- IdentityBalancedBatches

def test_identity_batches_are_p_identities_of_k_distinct_images_identity_major():
    p, k = 4, 3
    batches = balanced(p=p, k=k)
    assert batches.global_batch_size == 12 and batches.steps_per_epoch == 2
    for step in range(10):
        batch = global_batch(batches, step)
        blocks = batch["identity"].reshape(p, k)
        assert (blocks == blocks[:, :1]).all(), f"step {step}: not identity-major {blocks}"
        assert len(set(blocks[:, 0])) == p, f"step {step}: identities repeat {blocks[:, 0]}"
        assert set(blocks[:, 0]) <= ELIGIBLE, f"step {step}: ineligible identity in {blocks[:, 0]}"
        for block in batch["id"].reshape(p, k):
            assert len(set(block)) == k, f"step {step}: an image repeats within {block}"
        np.testing.assert_array_equal(IDS[batch["id"]], batch["identity"])


@pytest.mark.parametrize("p, k, eligible", [(4, 3, ELIGIBLE), (2, 3, ELIGIBLE),
                                            (3, 3, ELIGIBLE), (2, 5, {40, 60, 100, 110})])
def test_each_epoch_visits_eligible_identities_once_and_epochs_are_reshuffled(p, k, eligible):
    batches = balanced(p=p, k=k)
    per_epoch = len(eligible) // p * p  # the len(eligible) mod p left at an epoch's end are skipped
    epochs, visited, images = 5, set(), {}
    orders = []
    for e in range(epochs):
        steps = range(e * batches.steps_per_epoch, (e + 1) * batches.steps_per_epoch)
        seen = np.concatenate([global_batch(batches, s)["identity"][::k] for s in steps])
        assert len(seen) == per_epoch and len(set(seen)) == per_epoch, f"epoch {e}: {seen}"
        assert set(seen) <= eligible, f"epoch {e}: {set(seen) - eligible} have fewer than {k} images"
        visited |= set(seen)
        orders.append(tuple(seen))
        for s in steps:
            batch = global_batch(batches, s)
            for ident, block in zip(batch["identity"][::k], batch["id"].reshape(-1, k)):
                images.setdefault(ident, set()).add(tuple(sorted(block)))
    if per_epoch == len(eligible):
        assert visited == eligible
    assert len(set(orders)) == epochs, "one identity order repeated every epoch"
    # an identity with more than K images is not shown the same K images every epoch
    assert any(len(subsets) > 1 for subsets in images.values())


def test_too_few_eligible_identities_is_refused():
    with pytest.raises(ValueError, match=r"^only 8 identities have at least 3 images, fewer than the 9 identities"):
        balanced(p=9, k=3)
    with pytest.raises(ValueError, match="batch size 12 is not divisible by 5 processes"):
        balanced().local_batch(0, 0, 5)


# ------------------------------------------------------------------------------------ per-example rng

def test_example_rng_is_deterministic_and_differs_across_examples_steps_and_seeds():
    draw = lambda seed, step, index: example_rng(seed, step, index).random(4)
    np.testing.assert_array_equal(draw(1, 5, 3), draw(1, 5, 3))
    values = [draw(seed, step, index) for seed in (0, 1) for step in (0, 1, 7) for index in (0, 1, 2, 100)]
    assert len({tuple(v) for v in values}) == len(values)


def noise(batch, rngs):
    return {**batch, "x": batch["x"] + np.stack([rng.normal(size=batch["x"].shape[1:]) for rng in rngs])}


@pytest.mark.parametrize("make", [lambda **kw: combined(augment={"labeled": noise, "unlabeled": noise}, **kw),
                                  lambda **kw: balanced(augment=noise, **kw)], ids=["combined", "balanced"])
def test_augmentation_is_a_pure_function_of_seed_step_and_row(make):
    batches, fresh = make(seed=2), make(seed=2)
    keys = [k for k in global_batch(batches, 0) if k.endswith("x")]
    rows = []
    for step in (4, 0, 1):
        whole = global_batch(batches, step)
        for process_count in (2, 1):
            for key in keys:
                parts = [fresh.local_batch(step, p, process_count)[key] for p in range(process_count)]
                np.testing.assert_array_equal(np.concatenate(parts), whole[key], err_msg=f"step {step} {key}")
        rows.extend(np.concatenate([whole[k] for k in keys]))
    # every row of every step drew its own noise (the clean values are whole numbers)
    fractions = {tuple(np.round(np.modf(r)[0], 6)) for r in rows}
    assert len(fractions) == len(rows)
