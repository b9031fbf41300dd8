"""Build small Keras models, convert them with tf2onnx and write test fixtures.

For each model NAME writes, next to this script (the test fixtures; tests do not run it):
  NAME_op13.onnx, NAME_op17.onnx  -- tf2onnx.convert.from_keras output
                                     (opsets per model, see MODEL_OPSETS)
  NAME_io.npz                     -- x: (3,H,W,C) float32 NHWC inputs
                                     (default (3,28,28,1), see INPUT_SHAPES),
                                     y: model(x, training=False) logits

Usage: python make_keras_onnx.py [NAME ...]   (no NAME: all models)
The tests keep one opset of each model (tests/test_onnx_import.py).
Each model's seed is SEED + its index in BUILDERS, so building a subset
gives the same weights/inputs as building all of them (node names may differ).

Known-good environment: tensorflow-cpu 2.15.1 (Keras 2.15), tf2onnx 1.16.1,
onnx 1.17.0, onnxruntime 1.26.0, numpy 1.26.4, protobuf 3.20.3.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from tensorflow import keras
from tensorflow.keras import layers

SEED = 1234
OUT = os.path.dirname(os.path.abspath(__file__))
OPSETS = (13, 17)
INPUT_SHAPE = (28, 28, 1)
TOL = 1e-4


def set_seeds(seed):
    keras.utils.set_random_seed(seed)  # Python's, NumPy's and TensorFlow's generators


def randomize_bn(model, rng):
    """Give every BatchNormalization layer non-trivial gamma/beta/mean/var."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
            beta = rng.uniform(-0.5, 0.5, c).astype(np.float32)
            mean = rng.uniform(-0.5, 0.5, c).astype(np.float32)
            var = rng.uniform(0.5, 2.0, c).astype(np.float32)
            layer.set_weights([gamma, beta, mean, var])


def randomize_biases(model, rng):
    """Keras biases start at zero and tf2onnx then drops the bias Add
    entirely; give every Conv2D/Dense bias non-zero values instead."""
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.use_bias:
            w = layer.get_weights()
            w[1] = rng.uniform(-0.3, 0.3, w[1].shape).astype(np.float32)
            layer.set_weights(w)


def build_keras_seq():
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(8, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Conv2D(16, 3, padding="valid"),
            layers.ReLU(),
            layers.AveragePooling2D(2),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(10),
        ],
        name="keras_seq",
    )


def conv_bn(x, filters, k, strides=1, relu=True):
    x = layers.Conv2D(filters, k, strides=strides, padding="same")(x)
    x = layers.BatchNormalization()(x)
    if relu:
        x = layers.ReLU()(x)
    return x


def build_keras_res():
    inp = keras.Input(shape=(28, 28, 1))
    # stem
    s = conv_bn(inp, 8, 3)
    # identity residual block
    r = conv_bn(s, 8, 3)
    r = conv_bn(r, 8, 3, relu=False)
    x = layers.ReLU()(layers.Add()([r, s]))
    # projection block, stride 2
    m = conv_bn(x, 16, 3, strides=2)
    m = conv_bn(m, 16, 3, relu=False)
    sc = layers.Conv2D(16, 1, strides=2)(x)
    sc = layers.BatchNormalization()(sc)
    x = layers.ReLU()(layers.Add()([m, sc]))
    # two-branch concat on channel axis
    b1 = layers.Conv2D(8, 1)(x)
    b2 = layers.Conv2D(8, 3, padding="same")(x)
    x = layers.Concatenate(axis=-1)([b1, b2])
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10)(x)
    return keras.Model(inp, out, name="keras_res")


def build_keras_flatten_dense():
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(4, 5, strides=2, padding="valid"),
            layers.LeakyReLU(0.1),
            layers.Flatten(),
            layers.Dense(10),
        ],
        name="keras_flatten_dense",
    )


def build_keras_rgb():
    # 3 input channels: tf2onnx must emit a real NHWC->NCHW Transpose of the
    # input (with C == 1 it degenerates to a Reshape).
    return keras.Sequential(
        [
            keras.Input(shape=(16, 16, 3)),
            layers.Conv2D(4, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Conv2D(6, 3, strides=2, padding="same"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(5),
        ],
        name="keras_rgb",
    )


# Order matters: the index is part of each model's seed. Append new models.
BUILDERS = {
    "keras_seq": build_keras_seq,
    "keras_res": build_keras_res,
    "keras_flatten_dense": build_keras_flatten_dense,
    "keras_rgb": build_keras_rgb,
}

# Per-model overrides of INPUT_SHAPE (H, W, C) and OPSETS.
INPUT_SHAPES = {"keras_rgb": (16, 16, 3)}
MODEL_OPSETS = {"keras_rgb": (15,)}


def main(names=None):
    unknown = set(names or ()) - set(BUILDERS)
    if unknown:
        raise SystemExit(f"unknown model(s): {sorted(unknown)}; known: {list(BUILDERS)}")
    os.makedirs(OUT, exist_ok=True)
    for i, (name, build) in enumerate(BUILDERS.items()):
        if names and name not in names:
            continue
        shape = INPUT_SHAPES.get(name, INPUT_SHAPE)
        set_seeds(SEED + i)
        rng = np.random.default_rng(SEED + i)
        model = build()
        randomize_bn(model, rng)
        randomize_biases(model, rng)

        x = rng.standard_normal((3, *shape)).astype(np.float32)
        y = model(x, training=False).numpy().astype(np.float32)
        np.savez(os.path.join(OUT, f"{name}_io.npz"), x=x, y=y)

        for opset in MODEL_OPSETS.get(name, OPSETS):
            spec = [tf.TensorSpec((None, *shape), tf.float32, name="input")]
            model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
            path = os.path.join(OUT, f"{name}_op{opset}.onnx")
            onnx.save_model(model_proto, path)

            onnx.checker.check_model(onnx.load(path), full_check=True)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            in_name = sess.get_inputs()[0].name
            got = sess.run(None, {in_name: x})[0]
            err = float(np.max(np.abs(got - y)))
            if got.shape != y.shape or err > TOL:
                raise SystemExit(f"{path}: mismatch, shape {got.shape} vs {y.shape}, max err {err}")
            # dynamic batch: a single sample must also work
            got1 = sess.run(None, {in_name: x[:1]})[0]
            err1 = float(np.max(np.abs(got1 - y[:1])))
            if err1 > TOL:
                raise SystemExit(f"{path}: batch-1 mismatch, max err {err1}")
            print(
                f"{os.path.basename(path)}: ok, max|ort-keras| = {err:.2e}, "
                f"{os.path.getsize(path)} bytes"
            )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
