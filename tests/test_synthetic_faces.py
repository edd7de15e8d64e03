"""synthetic_faces: builder determinism, features, subsets and masks, identity splits, and the couplings
between attributes that make age / smile / face_value harder than the independent attributes."""

import dataclasses
import math
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxface.data import synthetic_faces as sf

tfds.disable_progress_bar()
SMOKE = sf.CONFIGS['smoke']


@pytest.fixture(scope='module')
def smoke_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('faces_a')
    sf.prepare('smoke', str(data_dir))
    return data_dir


@pytest.fixture(scope='module')
def splits(smoke_dir):
    """{split: {feature: stacked array}} of the prepared smoke variant."""
    out = {}
    for split in sf.SPLITS:
        source = sf.data_source('smoke', split, str(smoke_dir))
        examples = [source[i] for i in range(len(source))]
        out[split] = {name: np.stack([e[name] for e in examples]) for name in examples[0]}
    return out


def _record_files(data_dir: pathlib.Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(data_dir.rglob('*array_record*'))}


def test_prepare_twice_gives_identical_bytes(smoke_dir, tmp_path):
    sf.prepare('smoke', str(tmp_path))
    first, second = _record_files(smoke_dir), _record_files(tmp_path)
    assert len(first) == 3
    assert first == second


def test_source_matches_generator_with_declared_shapes_and_dtypes(smoke_dir, splits):
    sizes = SMOKE.split_sizes
    shapes = {'image': (112, 112, 3), 'pose': (3,), 'label_mask': (sf.NUM_ATTRIBUTES,)}
    for split in sf.SPLITS:
        assert len(splits[split]['image']) == sizes[split]
        for name, dtype in sf.FEATURE_DTYPES.items():
            assert splits[split][name].dtype == dtype, name
            assert splits[split][name].shape == (sizes[split],) + shapes.get(name, ()), name
    source = sf.data_source('smoke', 'validation', str(smoke_dir))
    for index in (0, 5):
        expected = sf.generate_example(SMOKE, 'validation', index)
        got = source.__getitems__([index])[0]
        for name in sf.FEATURE_DTYPES:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_label_masks_and_poses_follow_the_subset(splits):
    for split, data in splits.items():
        for subset, label_mask, pose_mask, pose in zip(data['subset'], data['label_mask'], data['pose_mask'],
                                                       data['pose']):
            expected = [name in sf.SUBSET_ATTRIBUTES[subset] for name in sf.ATTRIBUTES]
            np.testing.assert_array_equal(label_mask, np.array(expected, np.float32))
            assert pose_mask == (subset == 3)
            limit = sf.LARGE_POSE_LIMIT if subset == 3 else sf.FRONTAL_POSE_LIMIT
            assert np.all(np.abs(pose) <= np.array(limit) + 1e-4), (split, subset, pose)
    train = splits['train']
    assert set(train['subset'].tolist()) == {1, 2, 3}
    # Subset 1 labels exactly the independent attributes.
    subset1 = train['label_mask'][train['subset'] == 1][0]
    assert [n for n, m in zip(sf.ATTRIBUTES, subset1) if m] == [n for n in sf.ATTRIBUTES if n in sf.INDEPENDENT_ATTRIBUTES]
    assert np.abs(train['pose'][train['subset'] == 3][:, 0]).max() > 20.0


def test_every_class_occurs_and_regression_labels_are_in_range(splits):
    train = splits['train']
    for name, spec in sf.ATTRIBUTE_SPECS.items():
        if spec.kind == 'classification':
            assert set(train[name].tolist()) == set(range(spec.num_classes)), name
    assert train['age'].min() >= sf.AGE_RANGE[0] and train['age'].max() <= sf.AGE_RANGE[1]
    assert 0.0 < train['face_value'].min() and train['face_value'].max() <= 100.0
    assert train['face_value'].std() > 5.0


def test_test_identities_are_disjoint_and_identities_repeat(splits):
    seen = set(splits['train']['identity'].tolist()) | set(splits['validation']['identity'].tolist())
    test_ids = set(splits['test']['identity'].tolist())
    assert seen == set(range(SMOKE.num_train_identities))
    assert test_ids == set(range(SMOKE.num_train_identities, SMOKE.num_train_identities + SMOKE.num_test_identities))
    counts = np.bincount(splits['train']['identity'])
    assert counts.min() >= 2
    # Identity-fixed labels agree across the images of one identity; images themselves differ.
    for data in splits.values():
        for identity in set(data['identity'].tolist()):
            rows = data['identity'] == identity
            assert len(set(data['gender'][rows].tolist())) == 1
            assert len(set(data['face_value'][rows].tolist())) == 1
            if rows.sum() > 1:
                first, second = data['image'][rows][:2]
                assert np.abs(first.astype(int) - second.astype(int)).mean() > 1.0


def test_identity_parameters_are_deterministic_and_distinct():
    assert sf.sample_identity.__wrapped__(3, 17) == sf.sample_identity.__wrapped__(3, 17)
    assert sf.sample_identity(3, 17).proportions != sf.sample_identity(3, 18).proportions
    assert sf.sample_identity(3, 17).proportions != sf.sample_identity(4, 17).proportions


def test_face_value_formula():
    ideal = {name: ideal for name, ideal, _ in sf.PROPORTIONS}
    symmetric = {name: 0.0 for name, _ in sf.ASYMMETRIES}
    assert sf.face_value_score(ideal, symmetric) == pytest.approx(100.0)
    # One proportion at the edge of its range: P = 1 / 5, A = 0 -> 100 exp(-0.1).
    name, value, half = sf.PROPORTIONS[0]
    assert sf.face_value_score({**ideal, name: value + half}, symmetric) == pytest.approx(100 * math.exp(-0.1))
    # One asymmetry at 2 sd: A = 4 / 6 -> 100 exp(-1 / 3).
    asym_name, sd = sf.ASYMMETRIES[0]
    assert sf.face_value_score(ideal, {**symmetric, asym_name: 2 * sd}) == pytest.approx(100 * math.exp(-1 / 3))
    person = sf.sample_identity(0, 5)
    assert person.face_value == pytest.approx(sf.face_value_score(person.proportions, person.asymmetries))


def _frontal(identity: int, **changes):
    person = sf.sample_identity(0, identity)
    ex = sf.sample_example(np.random.default_rng([99, identity]), person, 2)
    ex = dataclasses.replace(ex, pose=(0.0, 0.0, 0.0), quality=0, glasses=0, mask=0, head_offset=(0.0, 0.0),
                             head_scale=1.0)
    return person, dataclasses.replace(ex, **changes)


def _mouth_box(person, examples, margin=4):
    points = np.concatenate([sf.landmarks(person, ex)[3:] for ex in examples])
    x0, y0 = np.floor(points.min(0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(0)).astype(int) + margin
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


@pytest.mark.parametrize('identity', [0, 1, 2])
def test_mask_hides_the_smile(identity):
    person, neutral = _frontal(identity, smile=0, smile_amount=0.05)
    smiling = dataclasses.replace(neutral, smile=1, smile_amount=0.9)
    box = _mouth_box(person, [neutral, smiling])
    bare = [sf.render_face(person, ex).astype(int) for ex in (neutral, smiling)]
    masked = [sf.render_face(person, dataclasses.replace(ex, mask=1)).astype(int) for ex in (neutral, smiling)]
    assert np.abs(bare[0][box] - bare[1][box]).mean() > 5.0  # without a mask the smile shows
    np.testing.assert_array_equal(masked[0][box], masked[1][box])


@pytest.mark.parametrize('identity', [3, 4])
def test_blur_and_low_resolution_hide_the_wrinkles(identity):
    person, young = _frontal(identity, age=25.0)
    # Keep the hair out of the forehead and its colour fixed so that only wrinkles change with age.
    person = dataclasses.replace(person, fringe=False, balding=0.0, greying_onset=500.0, hair_style='short')
    old = dataclasses.replace(young, age=70.0)
    eyes = sf.landmarks(person, young)[:2]
    spacing = eyes[1, 0] - eyes[0, 0]
    rows = slice(int(eyes[:, 1].mean() - 0.62 * spacing), int(eyes[:, 1].mean() - 0.4 * spacing))
    cols = slice(int(eyes[0, 0] + 0.2 * spacing), int(eyes[1, 0] - 0.2 * spacing))

    def wrinkle_contrast(quality):
        images = [sf.render_face(person, dataclasses.replace(ex, quality=quality)).astype(np.float32)
                  for ex in (young, old)]
        difference = (images[1] - images[0])[rows, cols].mean(-1)
        return float((difference - difference.mean()).std())

    sharp = wrinkle_contrast(0)
    assert sharp > 4.0
    assert wrinkle_contrast(1) < 0.35 * sharp
    assert wrinkle_contrast(2) < 0.35 * sharp


def test_pose_conventions_move_the_landmarks():
    person, frontal = _frontal(0)
    base = sf.landmarks(person, frontal)
    nose = 2
    turned = sf.landmarks(person, dataclasses.replace(frontal, pose=(30.0, 0.0, 0.0)))
    assert turned[nose, 0] > base[nose, 0] + 3
    raised = sf.landmarks(person, dataclasses.replace(frontal, pose=(0.0, 20.0, 0.0)))
    assert raised[nose, 1] < base[nose, 1] - 2
    rolled = sf.landmarks(person, dataclasses.replace(frontal, pose=(0.0, 0.0, 20.0)))
    assert rolled[1, 1] < rolled[0, 1] - 3  # counter-clockwise: the image-right eye goes up
    image = sf.render_face(person, frontal)
    assert np.abs(sf.render_face(person, dataclasses.replace(frontal, pose=(30.0, 0.0, 0.0))).astype(int)
                  - image).mean() > 5.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match='config_name'):
        sf.prepare('huge')
    with pytest.raises(ValueError, match='split'):
        sf.data_source('smoke', 'training')
    with pytest.raises(ValueError, match='subset'):
        sf.sample_example(np.random.default_rng(0), sf.sample_identity(0, 0), 4)
    with pytest.raises(ValueError, match='index'):
        sf.generate_example(SMOKE, 'train', -1)


def test_attributes_config_enlarges_the_cues_and_keeps_every_label():
    from jaxface.data.faces.builder import visible_identity

    attributes, default = sf.CONFIGS['attributes'], sf.CONFIGS['default']
    assert attributes.split_sizes == default.split_sizes
    # The first 600 train / validation examples belong to the same identities in both configs.
    for split, index in (('train', 0), ('validation', 7)):
        big, plain = (sf.generate_example(c, split, index) for c in (attributes, default))
        for name in sf.FEATURE_DTYPES:
            if name != 'image':
                np.testing.assert_array_equal(big[name], plain[name], err_msg=name)
        assert np.abs(big['image'].astype(int) - plain['image'].astype(int)).mean() > 5.0
    assert attributes.identity_of('test', 599) == 3599 and attributes.identity_of('train', 3000) == 0
    person, frontal = _frontal(3)
    visible = visible_identity(attributes, person)
    assert visible.face_value == person.face_value and visible_identity(default, person) is person
    plain, big = sf.landmarks(person, frontal), sf.landmarks(visible, frontal)
    # The head (eye spacing) 1.3x larger; the eyes' height difference 1.3 x 2.5 larger.
    assert (big[1, 0] - big[0, 0]) / (plain[1, 0] - plain[0, 0]) == pytest.approx(attributes.face_zoom, rel=1e-3)
    assert (big[1, 1] - big[0, 1]) / (plain[1, 1] - plain[0, 1]) == pytest.approx(
        attributes.face_zoom * attributes.asymmetry_scale, rel=1e-3)
    # Stronger smile cues: the smile changes more of the mouth region than at default's strength.
    neutral = dataclasses.replace(frontal, smile=0, smile_amount=0.05)
    smiling = dataclasses.replace(frontal, smile=1, smile_amount=0.7)
    box = _mouth_box(person, [neutral, smiling, dataclasses.replace(smiling, smile_scale=attributes.smile_scale)])

    def smile_change(scale):
        images = [sf.render_face(person, dataclasses.replace(ex, smile_scale=scale)).astype(int) for ex in (neutral, smiling)]
        return np.abs(images[1][box] - images[0][box]).mean()

    assert smile_change(attributes.smile_scale) > 1.3 * smile_change(1.0)
