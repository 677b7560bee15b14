"""The views' random numbers: stateless keyed draws, and one block of uniforms handed out column by column.

`keyed_draw(key)` is how `pretrain_dataset` makes its views: every draw depends on the key alone (the batch's
position in the stream), so a resumed run makes the views an uninterrupted run makes. `Columns` hands out the
columns of one `(batch, n)` block of uniforms, so that a view's whole random transform is one random-number
operation.
"""

import itertools

class Columns:
    """A `draw(shape)` that hands out the next columns of one `(batch, n)` block of uniforms, in order.

    `shape` is `(batch,)` or `(batch, k)`: one column or the next `k`. `check_used_up` fails unless every
    column was handed out (a stage added to `sample_transform` must be counted in `draws_per_image`).
    """

    def __init__(self, block):
        self.block = block
        self.taken = 0

    def __call__(self, shape):
        width = 1 if len(shape) == 1 else shape[1]
        if len(shape) > 2 or self.taken + width > self.block.shape[1]:
            raise ValueError(f"No {width} columns of shape {tuple(shape)} left in a block of {self.block.shape[1]}")
        columns = self.block[:, self.taken:self.taken + width]
        self.taken += width
        return columns[:, 0] if len(shape) == 1 else columns

    def check_used_up(self):
        if self.taken != self.block.shape[1]:
            raise ValueError(f"{self.taken} of the block's {self.block.shape[1]} columns were drawn")


def executing_eagerly():
    import tensorflow as tf

    return tf.executing_eagerly()


def fold_in(key, data):
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(key, data)


def keyed_draw(key):
    """A `draw(shape)` of stateless uniforms in [0, 1) from `key`: its first call draws from `key` itself, its
    i-th from `fold_in(key, i)` (`sample_transform` calls it once: each fold is one more random-number
    operation to compile).

    Pass it to `BYOLView.sample_transform` (or `augment`, `augment_crops`, `crop_uniforms`): the draws then
    depend on the key alone, not on a generator's state, so the same key gives the same views in every
    run and in any order of parallel calls.

    Args:
        key: int32 or int64 `(2,)` tensor.

    Returns:
        callable `shape -> float32 tensor of that shape`.
    """
    import tensorflow as tf

    counter = itertools.count()

    def draw(shape):
        index = next(counter)
        return tf.random.stateless_uniform(shape, seed=key if index == 0 else fold_in(key, index))

    return draw
