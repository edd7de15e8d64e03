"""The `synthetic_faces` TFDS builder: its configs (`CONFIGS`), the example stream of each split
(`generate_example`), and `prepare` / `data_source` on a data_dir (plumbing shared with
`synthetic_gestures` in `jaxface.data.tfds_builder`)."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import tensorflow_datasets as tfds

from jaxface.data import tfds_builder
from jaxface.data.faces.labels import ATTRIBUTES, NUM_ATTRIBUTES, SUBSET_ATTRIBUTES, SUBSET_PROBABILITIES, SUBSETS
from jaxface.data.faces.rendering import render_face
from jaxface.data.faces.sampling import IdentityParams, sample_example, sample_identity
from jaxface.data.tfds_builder import SPLITS, TypedSource


def split_seed(seed: int, split: str) -> int:
    """Seed of `split`'s example stream; distinct from every identity seed `[seed, k]` stream because it
    is the first entry of a different pair."""
    tfds_builder.check_choice('split', split, SPLITS)
    return 1_000_003 * (1 + SPLITS.index(split)) + seed


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticFacesConfig(tfds_builder.GeneratedConfig):
    """Sizes of one variant.

    Attributes:
      image_size: side of `image`.
      num_train, num_validation, num_test: examples per split.
      num_train_identities: identities 0..n-1, shared by train and validation.
      num_test_identities: the next identities, used only by test.
      seed: identity and example streams derive from it.
      face_zoom: every length of the head (and so of each face part) times this, about the same centre:
        1.3 fills the frame like an aligned face crop, so small cues (the mouth under a smile, the
        eye spacing) cover 1.3x more pixels.
      asymmetry_scale: the drawn left/right asymmetries (`ASYMMETRIES`) times this in the image; the
        face_value label is unchanged (it reads the asymmetries in units of their sampling sd), so
        only how visible the geometry behind it is changes.
      smile_scale: every smile cue (mouth opening onto teeth, raised corners, wider mouth, narrowed eyes,
        cheek blush) this many times stronger per unit of `smile_amount`; labels unchanged.
    """

    image_size: int = 112
    num_train_identities: int = 600
    num_test_identities: int = 60
    seed: int = 0
    face_zoom: float = 1.0
    asymmetry_scale: float = 1.0
    smile_scale: float = 1.0

    def identity_of(self, split: str, index: int) -> int:
        """Identity of example `index` of `split`: round-robin over the split's identity range."""
        if split == 'test':
            return self.num_train_identities + index % self.num_test_identities
        return index % self.num_train_identities


CONFIGS = {
    'default': SyntheticFacesConfig(
        name='default', image_size=112, num_train=6000, num_validation=600, num_test=600,
        num_train_identities=600, num_test_identities=60,
        description='112x112; 600 train/validation identities (10 train + 1 validation image each), '
                    '60 test identities (10 images each).'),
    'smoke': SyntheticFacesConfig(
        name='smoke', image_size=112, num_train=96, num_validation=24, num_test=24,
        num_train_identities=12, num_test_identities=4,
        description='Tiny variant for tests: 12 train/validation identities, 4 test identities.'),
    # For the multi-task recipe at 56x56, where `default` hides the coupled attributes: its asymmetries,
    # ~94% of face_value's variance, move features by 0.3-0.7 px; a smile opens the mouth by ~1 px; and
    # face_value, an identity's label, has only 600 distinct training values. Here the cues are larger
    # and there are 3000 training identities (2 images each), 600 test identities (1 each).
    'attributes': SyntheticFacesConfig(
        name='attributes', image_size=112, num_train=6000, num_validation=600, num_test=600,
        num_train_identities=3000, num_test_identities=600, face_zoom=1.3, asymmetry_scale=2.5, smile_scale=1.5,
        description='For face attributes at 56x56: the head 1.3x larger in the frame, asymmetries 2.5x and '
                    'smile cues 1.5x stronger (same labels); 3000 train/validation identities (2 train images '
                    'each, validation: 1 image of each of the first 600), 600 test identities (1 image each).'),
}


def visible_identity(config: SyntheticFacesConfig, person: IdentityParams) -> IdentityParams:
    """`person` as `config` renders it: the head `face_zoom` times larger, the asymmetries
    `asymmetry_scale` times larger; every label (face_value included) unchanged."""
    if config.face_zoom == 1.0 and config.asymmetry_scale == 1.0:
        return person
    scaled = types.MappingProxyType({k: v * config.asymmetry_scale for k, v in person.asymmetries.items()})
    return dataclasses.replace(person, half_width=person.half_width * config.face_zoom, asymmetries=scaled)

# The features of every example, in storage order, with the dtypes `data_source` returns them in.
FEATURE_DTYPES = {
    'image': np.uint8, 'gender': np.int32, 'age': np.float32, 'smile': np.int32, 'quality': np.int32,
    'face_value': np.float32, 'mask': np.int32, 'glasses': np.int32, 'pose': np.float32,
    'identity': np.int32, 'subset': np.int32, 'label_mask': np.float32, 'pose_mask': np.float32,
}


def generate_example(config: SyntheticFacesConfig, split: str, index: int) -> dict:
    """Example `index` of `split`: a dict of numpy arrays with the builder's features, a pure function
    of (config, split, index) through `np.random.default_rng([split_seed(config.seed, split), index])`
    and the identity's own stream."""
    if index < 0:
        raise ValueError(f'index must be >= 0; got {index}')
    rng = np.random.default_rng([split_seed(config.seed, split), index])
    subset = int(rng.choice(SUBSETS, p=SUBSET_PROBABILITIES))
    identity = config.identity_of(split, index)
    person = visible_identity(config, sample_identity(config.seed, identity))
    ex = sample_example(rng, person, subset)
    if config.smile_scale != 1.0:
        ex = dataclasses.replace(ex, smile_scale=config.smile_scale)
    labelled = SUBSET_ATTRIBUTES[subset]
    return {
        'image': render_face(person, ex, config.image_size),
        'gender': np.int32(person.gender),
        'age': np.float32(ex.age),
        'smile': np.int32(ex.smile),
        'quality': np.int32(ex.quality),
        'face_value': np.float32(person.face_value),
        'mask': np.int32(ex.mask),
        'glasses': np.int32(ex.glasses),
        'pose': np.asarray(ex.pose, np.float32),
        'identity': np.int32(identity),
        'subset': np.int32(subset),
        'label_mask': np.asarray([name in labelled for name in ATTRIBUTES], np.float32),
        'pose_mask': np.float32(subset == 3),
    }


class SyntheticFaces(tfds_builder.GeneratedBuilder):
    """Procedurally rendered faces with 7 attribute labels, pose and identity (see
    `jaxface.data.synthetic_faces`)."""

    VERSION = tfds.core.Version('1.1.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release.',
                     '1.1.0': "Config 'attributes' (face_zoom, asymmetry_scale, smile_scale, 3000 "
                            "identities); default and smoke unchanged."}
    BUILDER_CONFIGS = list(CONFIGS.values())
    DEFAULT_CONFIG_NAME = 'default'

    def _description(self) -> str:
        # The data set is documented once, in the public module. Imported here rather than at the top
        # because that module imports this one.
        from jaxface.data import synthetic_faces

        return synthetic_faces.__doc__

    def _features(self) -> tfds.features.FeaturesDict:
        size = self.builder_config.image_size
        shapes = {'image': (size, size, 3), 'pose': (3,), 'label_mask': (NUM_ATTRIBUTES,)}
        # Only the image is worth compressing; every other feature is a few bytes.
        encodings = {'image': tfds.features.Encoding.ZLIB}
        return tfds.features.FeaturesDict({
            name: tfds.features.Tensor(shape=shapes.get(name, ()), dtype=dtype,
                                       encoding=encodings.get(name, tfds.features.Encoding.NONE))
            for name, dtype in FEATURE_DTYPES.items()})

    def _generate_example(self, split: str, index: int) -> dict:
        return generate_example(self.builder_config, split, index)


def prepare(config_name: str = 'default', data_dir: str | None = None) -> SyntheticFaces:
    """Generates `synthetic_faces/<config_name>` as array_record files under `data_dir` (tfds' default
    directory when None; a no-op when already prepared) and returns the builder."""
    return tfds_builder.prepare(SyntheticFaces, config_name, data_dir)


def data_source(config_name: str, split: str, data_dir: str | None = None) -> TypedSource:
    """Random-access, TensorFlow-free source of a prepared split: `source[i]` is the dict of numpy
    arrays of example i (features and dtypes in `FEATURE_DTYPES`), `len(source)` the split size."""
    return tfds_builder.open_split(SyntheticFaces, config_name, split, data_dir)
