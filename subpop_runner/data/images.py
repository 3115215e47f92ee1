"""What the image datasets share: the authors' pixel scaling, their splits and ``max_rows``.

Pixels are scaled as in the authors' image code: ``x / 255 - 0.5``, float32, channels first.
``max_rows`` (smoke runs) caps each of D, D_aux and D_test at ``max_rows // 3`` rows, a sample
drawn with the seed, so a capped run keeps the three parts' roles and stays disjoint.
"""

from __future__ import annotations

import logging

import numpy as np

from subpop_runner.types import Part, Splits

log = logging.getLogger(__name__)


PIXEL_RANGE = (-0.5, 0.5)  # pixels 0 and 255, as `scale_pixels` gives them


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in `PIXEL_RANGE`."""
    return pixels.astype(np.float32) / 255.0 - 0.5


def capped(parts: list[np.ndarray], max_rows: int | None) -> list[np.ndarray]:
    """Each index array cut to ``max_rows // 3`` rows; the arrays come in a seeded random
    order, so their first rows are a seeded sample."""
    if max_rows is None:
        return parts
    return [part[: max_rows // 3] for part in parts]


def halves_split(
    n_train: int, n_test: int, seed: int, max_rows: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' CIFAR-10 rule: the train set shuffled with ``seed`` and halved into D
    and D_aux, the test set as D_test. Returns index arrays into the train set (D, D_aux) and
    the test set (D_test)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_train)
    half = n_train // 2
    test = np.arange(n_test) if max_rows is None else rng.permutation(n_test)
    train, aux, test = capped([order[:half], order[half:], test], max_rows)
    return train, aux, test


def image_splits(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    *,
    seed: int,
    max_rows: int | None,
) -> Splits:
    """`Splits` by `halves_split` from uint8 ``(images, labels)`` of the train and test files;
    only the rows kept are scaled."""
    (train_x, train_y), (test_x, test_y) = train, test
    train_idx, aux_idx, test_idx = halves_split(len(train_y), len(test_y), seed, max_rows)
    splits = Splits(
        Part(scale_pixels(train_x[train_idx]), train_y[train_idx].astype(np.int64)),
        Part(scale_pixels(train_x[aux_idx]), train_y[aux_idx].astype(np.int64)),
        Part(scale_pixels(test_x[test_idx]), test_y[test_idx].astype(np.int64)),
        class_names,
    )
    log_summary(name, splits)
    return splits


def log_summary(name: str, splits: Splits) -> None:
    log.info(
        "%s: train %d / aux %d / test %d images of shape %s, %d classes",
        name,
        len(splits.train),
        len(splits.aux),
        len(splits.test),
        "x".join(str(d) for d in splits.train.x.shape[1:]),
        splits.n_classes,
    )
