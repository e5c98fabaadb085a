"""Training-time augmentation: shifts stay in bounds, batches are seeded per epoch and resumable."""

from __future__ import annotations

import numpy as np


def test_shift_batch_moves_each_image_within_bounds() -> None:
    from birnn.augment import shift_batch

    imgs = np.zeros((50, 28, 28), dtype=np.float32)
    imgs[:, 14, 14] = 1.0  # one lit pixel in the middle
    out = np.asarray(shift_batch(imgs, 2, np.array([1, 2], dtype=np.int64)))
    assert out.shape == imgs.shape
    rows, cols = np.nonzero(out.max(axis=0))
    assert set(rows) <= set(range(12, 17)) and set(cols) <= set(range(12, 17))
    assert out.sum() == 50  # nothing lost: each image still has its one pixel
    assert len({tuple(np.argwhere(o)[0]) for o in out}) > 5  # images move independently
    again = np.asarray(shift_batch(imgs, 2, np.array([1, 2], dtype=np.int64)))
    np.testing.assert_array_equal(out, again)


def test_augmented_batches_are_seeded_per_epoch_and_resumable() -> None:
    from birnn.augment import augmented_batches

    x = np.random.default_rng(0).random((10, 28, 28), dtype=np.float32)
    y = np.arange(10, dtype=np.uint8)
    full = [(np.asarray(a), np.asarray(b)) for a, b in augmented_batches(x, y, 4, 2, 1, 0, 3)]
    assert len(full) == 9  # 3 batches x 3 epochs
    again = [(np.asarray(a), np.asarray(b)) for a, b in augmented_batches(x, y, 4, 2, 1, 0, 3)]
    for (a, b), (c, d) in zip(full, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    # Each epoch sees every sample once, in a new order.
    epoch0 = np.concatenate([b for _, b in full[:3]])
    epoch1 = np.concatenate([b for _, b in full[3:6]])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert not np.array_equal(epoch0, epoch1)
    # A run resumed at epoch 1 sees exactly what an uninterrupted run sees from epoch 1 on.
    resumed = [(np.asarray(a), np.asarray(b)) for a, b in augmented_batches(x, y, 4, 2, 1, 1, 3)]
    for (a, b), (c, d) in zip(full[3:], resumed, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
