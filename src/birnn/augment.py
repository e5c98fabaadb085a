"""The training input: shuffled batches of randomly shifted images, as a seeded tf.data stream.

Epoch e's order and batch i's shifts are drawn from stateless generators seeded by
``(seed, e)`` and ``(seed, e, i)``: runs repeat exactly, and a run resumed at epoch e sees the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def shift_batch(images: Any, max_shift: int, seed: Any) -> Any:
    """Translate each image of a batch by its own random (dy, dx) in [-max_shift, max_shift].

    Zero-filled, with stateless random ops: the same ``seed`` (int64 pair) gives the same shifts.
    """
    import tensorflow as tf

    n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    span = 2 * max_shift + 1
    offsets = tf.random.stateless_uniform([2, n], seed=seed, maxval=span, dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift]])
    rows = offsets[0][:, None] + tf.range(h)[None, :]
    cols = offsets[1][:, None] + tf.range(w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def augmented_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    max_shift: int,
    seed: int,
    start_epoch: int,
    epochs: int,
) -> Any:
    """A tf.data stream of shuffled, randomly shifted batches for epochs start_epoch..epochs-1
    (not shifted when ``max_shift`` is 0).

    Epoch e's order is a stateless shuffle seeded by (seed, e) and batch i's shifts are seeded by
    (seed, e, i): runs repeat exactly and a resumed run sees what an uninterrupted one would.
    The work runs in tf.data's threads, prefetched, off the training step's critical path.
    """
    import tensorflow as tf

    xs, ys, n = tf.constant(x), tf.constant(y), len(y)

    def one_epoch(epoch: Any) -> Any:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )

        def make(i: Any, idx: Any) -> Any:
            if not max_shift:
                return tf.gather(xs, idx), tf.gather(ys, idx)
            batch_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 1_000_003 + i])
            return shift_batch(tf.gather(xs, idx), max_shift, batch_seed), tf.gather(ys, idx)

        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate().map(make)

    epochs_ds = tf.data.Dataset.range(start_epoch, epochs)
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
