"""Tests for the synthetic_gestures TFDS builder, the builder plumbing it shares with synthetic_faces
(`jaxface.data.tfds_builder`), and the CenterNet target encoder."""

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from jaxface.data import synthetic_gestures as sg
from jaxface.data import tfds_builder
from jaxface.data.centernet_targets import encode_centernet_batch
from jaxface.data.centernet_targets import encode_centernet_targets
from jaxface.data.centernet_targets import gaussian_radius

tfds.disable_progress_bar()

SPLITS = ('train', 'validation', 'test')
SMOKE = sg.CONFIGS['smoke']


def _read_split(data_dir, split):
    source = sg.data_source('smoke', split, str(data_dir))
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope='module')
def smoke_dirs(tmp_path_factory):
    """`smoke` prepared twice into two separate directories."""
    dirs = [tmp_path_factory.mktemp(f'tfds_{run}') for run in range(2)]
    for data_dir in dirs:
        sg.prepare('smoke', str(data_dir))
    return dirs


@pytest.fixture(scope='module')
def smoke_examples(smoke_dirs):
    return {split: _read_split(smoke_dirs[0], split) for split in SPLITS}


def test_preparing_twice_gives_identical_files_and_arrays(smoke_dirs):
    version_dirs = [d / 'synthetic_gestures' / 'smoke' / '1.0.0' for d in smoke_dirs]
    record_files = sorted(p.name for p in version_dirs[0].glob('*.array_record*'))
    assert len(record_files) == 3
    for name in record_files:
        assert (version_dirs[0] / name).read_bytes() == (version_dirs[1] / name).read_bytes(), name
    for split in SPLITS:
        first, second = _read_split(smoke_dirs[0], split), _read_split(smoke_dirs[1], split)
        for a, b in zip(first, second):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_split_sizes_follow_config(smoke_dirs):
    builder = sg.SyntheticGestures(config='smoke', data_dir=str(smoke_dirs[0]))
    for split, size in SMOKE.split_sizes.items():
        assert builder.info.splits[split].num_examples == size
        assert len(sg.data_source('smoke', split, str(smoke_dirs[0]))) == size
    assert sg.CONFIGS['lr64'].split_sizes == {'train': 4096, 'validation': 512, 'test': 512}
    assert sg.CONFIGS['lr128'].hr_size == 256
    assert sg.SyntheticGestures.DEFAULT_CONFIG_NAME == 'lr64'


def test_plain_tfds_data_source_reads_prepared_dataset(smoke_dirs):
    source = tfds.data_source('synthetic_gestures/smoke', split='validation', data_dir=str(smoke_dirs[0]))
    assert len(source) == SMOKE.num_validation


def test_stored_examples_are_generate_example_in_index_order(smoke_examples):
    for index in (0, 5, 127):
        expected = sg.generate_example('train', index, lr_size=64)
        for key, value in expected.items():
            np.testing.assert_array_equal(smoke_examples['train'][index][key], value)


def test_generation_does_not_depend_on_order():
    first = sg.generate_example('test', 9, lr_size=64)
    sg.generate_example('test', 2, lr_size=64)
    sg.generate_example('train', 9, lr_size=64)
    again = sg.generate_example('test', 9, lr_size=64)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other_split = sg.generate_example('train', 9, lr_size=64)
    assert not np.array_equal(first['image_hr'], other_split['image_hr'])


def test_shapes_dtypes_labels_and_padding(smoke_examples):
    for examples in smoke_examples.values():
        for example in examples:
            assert example['image'].shape == (64, 64, 3) and example['image'].dtype == np.uint8
            assert example['image_hr'].shape == (128, 128, 3) and example['image_hr'].dtype == np.uint8
            assert example['boxes'].shape == (sg.MAX_HANDS, 4) and example['boxes'].dtype == np.float32
            assert example['labels'].shape == (sg.MAX_HANDS,) and example['labels'].dtype == np.int32
            assert example['num_hands'].shape == () and example['num_hands'].dtype == np.int32
            num_hands = int(example['num_hands'])
            assert 0 <= num_hands <= sg.MAX_HANDS
            labels, boxes = example['labels'], example['boxes']
            assert np.all((labels[:num_hands] >= 0) & (labels[:num_hands] < sg.NUM_CLASSES))
            assert np.all(labels[num_hands:] == -1)
            assert np.all(boxes[num_hands:] == 0)
            valid = boxes[:num_hands]
            assert np.all((valid >= 0) & (valid <= 1))
            assert np.all(valid[:, 0] < valid[:, 2]) and np.all(valid[:, 1] < valid[:, 3])
            for i in range(num_hands):
                for j in range(i):
                    assert sg._iou(valid[i], valid[j]) <= sg.MAX_PAIRWISE_IOU + 1e-6


def test_scene_counts_cover_zero_to_max_hands_and_every_class(smoke_examples):
    examples = [e for split in SPLITS for e in smoke_examples[split]]
    counts = np.bincount([int(e['num_hands']) for e in examples], minlength=sg.MAX_HANDS + 1)
    assert np.all(counts > 0), counts
    labels = np.concatenate([e['labels'][:int(e['num_hands'])] for e in examples])
    class_counts = np.bincount(labels, minlength=sg.NUM_CLASSES)
    assert len(sg.CLASS_NAMES) >= 6 and len(class_counts) == sg.NUM_CLASSES
    assert np.all(class_counts >= 10), class_counts


def test_image_is_blurred_downsample_of_image_hr(smoke_examples):
    for example in smoke_examples['validation']:
        hr = example['image_hr'].astype(np.float32)
        pooled = hr.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
        assert np.abs(pooled - example['image']).mean() < 4.0
        np.testing.assert_array_equal(example['image'], sg.blur_downsample(example['image_hr'], 2))
    # The blur is real: an edge spreads over more than one low-resolution pixel.
    step = np.zeros((16, 16, 3), np.uint8)
    step[:, 8:] = 200
    row = sg.blur_downsample(step, 2)[2, :, 0]
    assert row[0] == 0 and row[-1] == 200 and 0 < row[3] < 100 < row[4] < 200


def test_blur_downsample_rejects_bad_shape():
    with pytest.raises(ValueError, match='divisible'):
        sg.blur_downsample(np.zeros((15, 16, 3), np.uint8), 2)


def test_boxes_tightly_enclose_drawn_hands():
    size = 512
    for seed in range(12):
        for hand in sg._place_hands(np.random.default_rng([99, seed])):
            canvas = Image.new('RGB', (size, size))
            sg._draw_hand(ImageDraw.Draw(canvas), hand, size)
            rows, cols = np.nonzero(np.asarray(canvas).any(axis=-1))
            drawn = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / size
            np.testing.assert_allclose(hand['box'], drawn, atol=2.5 / size)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='split'):
        sg.generate_example('training', 0, lr_size=64)
    with pytest.raises(ValueError, match='config_name'):
        sg.prepare('lr32', '/nonexistent')
    with pytest.raises(ValueError, match='split'):
        sg.data_source('smoke', 'val', '/nonexistent')


# ----------------------------------------------------------------------------------------------
# The builder plumbing shared with synthetic_faces (jaxface.data.tfds_builder), on a builder of its own.


class _Counting(tfds_builder.GeneratedBuilder, skip_registration=True):
    """Example i of split s: value = 10 i + (index of s in SPLITS), an int32 scalar; vector = [i, i]."""

    name = 'tfds_builder_counting'
    VERSION = tfds.core.Version('1.0.0')
    BUILDER_CONFIGS = [tfds_builder.GeneratedConfig(name='tiny', num_train=5, num_validation=2, num_test=1)]

    def _features(self):
        return tfds.features.FeaturesDict({'value': tfds.features.Tensor(shape=(), dtype=np.int32),
                                           'vector': tfds.features.Tensor(shape=(2,), dtype=np.float32)})

    def _generate_example(self, split, index):
        return {'value': np.int32(10 * index + tfds_builder.SPLITS.index(split)),
                'vector': np.full(2, index, np.float32)}


def test_generated_builder_stores_example_i_at_i_with_declared_dtypes(tmp_path):
    builder = tfds_builder.prepare(_Counting, 'tiny', str(tmp_path))
    assert builder.info.description == __doc__  # the builder's module docstring
    records = sorted(tmp_path.rglob('*.array_record*'))
    assert len(records) == 3
    stamps = [path.stat().st_mtime_ns for path in records]
    tfds_builder.prepare(_Counting, 'tiny', str(tmp_path))  # already prepared: nothing is rewritten
    assert [path.stat().st_mtime_ns for path in records] == stamps
    for split_index, split in enumerate(tfds_builder.SPLITS):
        source = tfds_builder.open_split(_Counting, 'tiny', split, str(tmp_path))
        assert len(source) == _Counting.BUILDER_CONFIGS[0].split_sizes[split]
        for index, example in enumerate(source.__getitems__(range(len(source)))):
            # tfds alone would decode the scalar as a Python int.
            assert example['value'].dtype == np.int32 and example['value'] == 10 * index + split_index
            assert example['vector'].dtype == np.float32
            np.testing.assert_array_equal(example['vector'], [index, index])
    with pytest.raises(ValueError, match=r"config_name must be one of \['tiny'\]; got 'huge'"):
        tfds_builder.prepare(_Counting, 'huge', str(tmp_path))
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train', 'validation'\]; got 'val'"):
        tfds_builder.open_split(_Counting, 'tiny', 'val', str(tmp_path))


# ----------------------------------------------------------------------------------------------
# CenterNet targets.


def test_gaussian_radius_matches_hand_computation():
    # 8 x 8 box: the third case, 2.8 r^2 - 22.4 r - 19.2 = 0 solved as (b + sqrt(b^2 - 4ac)) / 2.
    expected = (-22.4 + math.sqrt(22.4 ** 2 + 4 * 2.8 * 19.2)) / 2
    assert gaussian_radius(8, 8) == pytest.approx(expected)
    assert int(gaussian_radius(8, 8)) == 2


def test_encoder_hand_checked_case():
    # 16 x 16 grid. Box A (class 2): rows 4..12, cols 3.5..11.5 -> centre (8.0, 7.5), size 8 x 8, radius 2.
    # Box B (class 0): rows 0..2, cols 12..16 -> centre (1.0, 14.0), size 2 x 4.
    boxes = np.array([[4 / 16, 3.5 / 16, 12 / 16, 11.5 / 16],
                      [0.0, 12 / 16, 2 / 16, 1.0],
                      [0.9, 0.9, 0.1, 0.1]], np.float32)  # padding rows may hold anything
    labels = np.array([2, 0, -1])
    targets = encode_centernet_targets(boxes, labels, num_classes=3, output_size=(16, 16))
    assert targets['heatmap'].shape == (16, 16, 3) and targets['heatmap'].dtype == np.float32
    assert targets['wh'].shape == (16, 16, 2) and targets['offset'].shape == (16, 16, 2)
    assert targets['mask'].shape == (16, 16)
    heat = targets['heatmap'][..., 2]
    assert heat[8, 7] == 1.0 and heat.max() == 1.0
    sigma = 5 / 6  # (2r + 1) / 6 with r = 2
    assert heat[8, 8] == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)
    assert heat[6, 5] == pytest.approx(math.exp(-8 / (2 * sigma ** 2)), rel=1e-6)
    assert heat[8, 10] == 0.0 and heat[5, 7] == 0.0  # 3 cells away: outside the radius
    assert np.count_nonzero(heat) == 25
    np.testing.assert_array_equal(targets['wh'][8, 7], [8.0, 8.0])
    np.testing.assert_array_equal(targets['offset'][8, 7], [0.0, 0.5])
    np.testing.assert_array_equal(targets['wh'][1, 14], [2.0, 4.0])
    np.testing.assert_array_equal(targets['offset'][1, 14], [0.0, 0.0])
    assert targets['heatmap'][1, 14, 0] == 1.0
    assert np.all(targets['heatmap'][..., 1] == 0)
    assert targets['mask'].sum() == 2 and targets['mask'][8, 7] == 1 and targets['mask'][1, 14] == 1
    assert np.count_nonzero(targets['wh'].any(-1)) == 2


def test_encoder_overlapping_peaks_take_max_and_padding_only_is_empty():
    box = np.array([4 / 16, 3.5 / 16, 12 / 16, 11.5 / 16])
    shifted = box + np.array([0, 1, 0, 1]) / 16  # same class, centre one cell to the right
    single = encode_centernet_targets(box[None], np.array([0]), num_classes=1, output_size=(16, 16))
    pair = encode_centernet_targets(np.stack([box, shifted]), np.array([0, 0]), num_classes=1,
                                    output_size=(16, 16))
    expected = np.maximum(single['heatmap'], np.roll(single['heatmap'], 1, axis=1))
    np.testing.assert_allclose(pair['heatmap'], expected)
    assert pair['heatmap'].max() == 1.0
    empty = encode_centernet_targets(np.zeros((3, 4)), -np.ones(3, int), num_classes=2, output_size=(4, 4))
    assert all(not value.any() for value in empty.values())


def test_encoder_batch_matches_single_and_dataset_example():
    example = sg.generate_example('train', 1, lr_size=64)  # a scene with hands
    assert example['num_hands'] > 0
    boxes = np.stack([example['boxes'], np.zeros_like(example['boxes'])])
    labels = np.stack([example['labels'], np.full_like(example['labels'], -1)])
    batch = encode_centernet_batch(boxes, labels, num_classes=sg.NUM_CLASSES, output_size=(16, 16))
    single = encode_centernet_targets(example['boxes'], example['labels'], num_classes=sg.NUM_CLASSES,
                                      output_size=(16, 16))
    assert batch['heatmap'].shape == (2, 16, 16, sg.NUM_CLASSES) and batch['mask'].shape == (2, 16, 16)
    for key in single:
        np.testing.assert_array_equal(batch[key][0], single[key])
        assert not batch[key][1].any()
    assert batch['mask'][0].sum() == example['num_hands']


@pytest.mark.parametrize('boxes, labels, message', [
    (np.zeros((2, 3)), np.zeros(2, int), 'boxes must have shape'),
    (np.zeros((2, 4)), np.zeros(3, int), 'labels must have shape'),
    (np.full((1, 4), 0.5), np.array([3]), r'labels must be -1 \(padding\) or in \[0, 3\)'),
    (np.full((1, 4), 0.5), np.array([-2]), 'labels must be -1'),
    (np.full((1, 4), 0.5), np.array([0.0]), 'labels must be integers'),
    (np.array([[0.0, 0.0, 1.5, 1.0]]), np.array([0]), 'normalised'),
    (np.array([[0.6, 0.0, 0.4, 1.0]]), np.array([0]), 'ymin <= ymax'),
])
def test_encoder_rejects_bad_input(boxes, labels, message):
    with pytest.raises(ValueError, match=message):
        encode_centernet_targets(boxes, labels, num_classes=3, output_size=(8, 8))


def test_encoder_rejects_bad_output_size_and_batch_shape():
    with pytest.raises(ValueError, match='output_size'):
        encode_centernet_targets(np.zeros((1, 4)), np.array([0]), num_classes=1, output_size=(0, 8))
    with pytest.raises(ValueError, match=r'\[B, K, 4\]'):
        encode_centernet_batch(np.zeros((2, 4)), np.zeros(2, int), num_classes=1, output_size=(8, 8))


def test_the_vectorised_batch_encoder_equals_the_per_box_reference():
    """Random batches with padding, degenerate and full-image boxes, boxes sharing a centre cell and
    several boxes of one class in one image, on square and non-square grids: bit-identical targets."""
    from jaxface.data.centernet_targets import _encode_checked

    rng = np.random.default_rng(0)
    for trial in range(60):
        b, k, c = 8, 5, 3
        y0, x0 = rng.uniform(0, 0.9, (b, k)), rng.uniform(0, 0.9, (b, k))
        h = rng.uniform(0, 0.5, (b, k)) * rng.integers(0, 2, (b, k))  # some zero-height boxes
        boxes = np.stack([y0, x0, np.minimum(y0 + h, 1), np.minimum(x0 + rng.uniform(0, 0.5, (b, k)), 1)], -1)
        if trial % 3 == 0:
            boxes[:, 1] = boxes[:, 0]  # the same centre cell twice
        if trial % 5 == 0:
            boxes[:, 2] = [0, 0, 1, 1]
        labels = rng.integers(-1, c, (b, k))
        size = (16, 16) if trial % 2 else (13, 20)
        batch = encode_centernet_batch(boxes, labels, num_classes=c, output_size=size)
        for i in range(b):
            reference = _encode_checked(boxes[i], labels[i], c, *size)
            for key, value in reference.items():
                assert batch[key][i].dtype == value.dtype and np.array_equal(batch[key][i], value), (trial, i, key)
    empty = encode_centernet_batch(np.zeros((2, 3, 4)), -np.ones((2, 3), int), num_classes=2, output_size=(4, 4))
    assert empty["heatmap"].shape == (2, 4, 4, 2) and not empty["heatmap"].any()
