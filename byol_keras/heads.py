"""The projector and predictor: the paper's two-layer MLP heads."""

import keras

from byol_keras.validation import check_positive_int

# Paper, section 3.3 and appendix: "a multi-layer perceptron (MLP) ... a linear layer with output size
# 4096 followed by batch normalization, rectified linear units (ReLU), and a final linear layer with
# output dimension 256". BatchNorm as in the official code: decay 0.9, eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def mlp_head(input_dim, hidden_dim, output_dim, synchronized=False, name="head", kernel_initializer="glorot_uniform"):
    """Build Dense(hidden) → BatchNormalization → ReLU → Dense(output) as a `keras.Sequential`.

    Args:
        input_dim: int, size of the incoming feature vectors.
        hidden_dim: int, width of the hidden layer (4096 in the paper).
        output_dim: int, size of the output (256 in the paper).
        synchronized: bool, cross-replica BatchNorm (the paper's choice on many devices).
            Defaults to False.
        name: str, the model's name. Defaults to "head".
        kernel_initializer: the two Dense kernels' initializer, any `keras.initializers.get`
            identifier. Defaults to "glorot_uniform" (Keras' default).

    Returns:
        A built `keras.Sequential` mapping `(batch, input_dim)` to `(batch, output_dim)`.
    """
    input_dim = check_positive_int("input_dim", input_dim)
    hidden_dim = check_positive_int("hidden_dim", hidden_dim)
    output_dim = check_positive_int("output_dim", output_dim)
    return keras.Sequential(
        [
            keras.Input(shape=(input_dim,)),
            keras.layers.Dense(hidden_dim, kernel_initializer=keras.initializers.get(kernel_initializer), name="dense_hidden"),
            keras.layers.BatchNormalization(
                momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name="bn"
            ),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(output_dim, kernel_initializer=keras.initializers.get(kernel_initializer), name="dense_out"),
        ],
        name=name,
    )
