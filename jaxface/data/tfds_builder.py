"""What the project's generated TFDS data sets (`synthetic_faces`, `synthetic_gestures`) share.

Both are offline builders in which example i of split s is a pure function of (config, s, i), so this
module holds everything but the examples themselves:
  GeneratedConfig   a `tfds.core.BuilderConfig` with the three split sizes (`split_sizes`).
  GeneratedBuilder  a `GeneratorBasedBuilder` that writes `_generate_example(split, i)` at position i of
                    every split (nothing to download, shuffling disabled); subclasses give the features
                    and the example function.
  prepare           generates a config as array_record files under a data_dir (a no-op when already
                    prepared there) and returns the builder.
  open_split        a prepared split as a random-access, TensorFlow-free source: reads of damaged files
                    name the data set and how to rebuild it (`pipeline.PreparedSource`), and every
                    feature comes back with its declared dtype (`TypedSource`).
  check_choice      the one-line ValueError for an unknown config or split name.

Neither preparing nor reading needs TensorFlow as long as every feature is a `tfds.features.Tensor`
and the files are array_record (tfds' default tfrecord format, `tfds.features.Image` given numpy arrays
and `tfds.load` all import TensorFlow).
"""

from __future__ import annotations

import abc
import dataclasses
import sys
from typing import Any, Collection, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from jaxface.data.pipeline import PreparedSource

SPLITS = ('train', 'validation', 'test')
HOMEPAGE = 'https://github.com/jaxface'


def check_choice(argument: str, value: Any, allowed: Collection) -> None:
    """Raises `ValueError('<argument> must be one of [sorted allowed]; got <value>')` unless `value` is
    in `allowed`."""
    if value not in allowed:
        raise ValueError(f'{argument} must be one of {sorted(allowed)}; got {value!r}')


@dataclasses.dataclass(eq=False, kw_only=True)
class GeneratedConfig(tfds.core.BuilderConfig):
    """A builder config that knows its split sizes; subclasses add what the examples depend on.

    Attributes:
      num_train, num_validation, num_test: number of examples per split.
    """

    num_train: int
    num_validation: int
    num_test: int

    @property
    def split_sizes(self) -> dict[str, int]:
        return {'train': self.num_train, 'validation': self.num_validation, 'test': self.num_test}


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose example `index` of `split` is `self._generate_example(split, index)`.

    Subclasses set VERSION, RELEASE_NOTES, BUILDER_CONFIGS (`GeneratedConfig`s), DEFAULT_CONFIG_NAME and
    define `_features()` and `_generate_example(split, index)`. The data set's description is the
    docstring of the subclass's module unless `_description()` says otherwise. Example i is stored at
    position i (shuffling disabled), so `open_split(...)[i] == _generate_example(split, i)`.

    This base class is not registered with TFDS (`skip_registration`); each subclass is, under the
    snake_case of its class name.
    """

    @abc.abstractmethod
    def _features(self) -> tfds.features.FeaturesDict:
        """The features of `self.builder_config`'s examples."""

    @abc.abstractmethod
    def _generate_example(self, split: str, index: int) -> dict[str, Any]:
        """Example `index` of `split` under `self.builder_config`: numpy values keyed like `_features()`."""

    def _description(self) -> str:
        return sys.modules[type(self).__module__].__doc__ or ''

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description(),
            features=self._features(),
            # Keep example i at position i so open_split(...)[i] == _generate_example(split, i).
            disable_shuffling=True,
            homepage=HOMEPAGE,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: every example is generated.
        return {split: self._generate_examples(split, size)
                for split, size in self.builder_config.split_sizes.items()}

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict[str, Any]]]:
        for index in range(num_examples):
            yield index, self._generate_example(split, index)


def _check_config_name(builder_class: type[GeneratedBuilder], config_name: str) -> None:
    check_choice('config_name', config_name, {config.name for config in builder_class.BUILDER_CONFIGS})


def prepare(builder_class: type[GeneratedBuilder], config_name: str, data_dir: str | None) -> GeneratedBuilder:
    """Generates `<name>/<config_name>` as array_record files under `data_dir` (tfds' default directory
    when None; a no-op when already prepared there) and returns the builder."""
    _check_config_name(builder_class, config_name)
    tfds.disable_progress_bar()  # progress bars flood training logs
    builder = builder_class(config=config_name, data_dir=data_dir, file_format='array_record')
    builder.download_and_prepare()
    return builder


class TypedSource:
    """A random-access source whose examples come back with the declared dtypes.

    tfds' numpy decoding returns scalar features as Python int / float, which `np.stack` would widen to
    int64 / float64; this wrapper casts every feature to `dtypes[name]` instead. Random access:
    `len(source)`, `source[i]`, `source.__getitems__([i, j, ...])`.
    """

    def __init__(self, source, dtypes: Mapping[str, Any]):
        self.source = source
        self.dtypes = dict(dtypes)

    def __len__(self) -> int:
        return len(self.source)

    def _cast(self, example: dict) -> dict:
        return {name: np.asarray(value, self.dtypes[name]) for name, value in example.items()}

    def __getitem__(self, index: int) -> dict:
        return self._cast(self.source[index])

    def __getitems__(self, indices) -> list:
        return [self._cast(example) for example in self.source.__getitems__(list(indices))]


def open_split(builder_class: type[GeneratedBuilder], config_name: str, split: str,
               data_dir: str | None) -> TypedSource:
    """Random-access, TensorFlow-free source of a prepared split: `source[i]` is the dict of numpy arrays
    of example i with the builder's feature names and dtypes, `len(source)` the split size. Raises
    `pipeline.DamagedDataError` when the files cannot be read (checked on the first and last example)."""
    _check_config_name(builder_class, config_name)
    check_choice('split', split, SPLITS)
    source = PreparedSource(f'{builder_class.name}/{config_name}', split, data_dir)
    features = builder_class(config=config_name, data_dir=data_dir).info.features
    return TypedSource(source, {name: feature.np_dtype for name, feature in features.items()})
