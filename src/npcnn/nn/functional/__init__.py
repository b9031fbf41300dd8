"""Reference kernels: the maths of every layer as plain NCHW NumPy functions.

One forward/backward pair per operation, with no classes and no state:

    y, cache = conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), groups=1)
    dx, dweight, dbias = conv2d_backward(dy, cache)

The forward returns its output and a cache (whatever the backward needs);
the backward takes dL/dy and the cache and returns dL/d(each input). The
fast kernels (`npcnn.kernels`) have the same signatures; for them, a
forward's `need_cache=False` (relu, max_pool2d, batch_norm) skips what only
the backward needs, and a backward's `need_input_grad=False` (conv2d, dense)
skips dx: both are accepted here too. Each
module's docstring states the maths and the shapes, and the code follows it
line by line; everything keeps its input's dtype (float32 in, float32 out).
These kernels are written to be read and to hold the fast layers to (see
tests/test_functional.py), not for speed: conv2d copies every receptive
field (im2col) and pooling does too.

    conv.py        conv2d (grouped and depthwise too), im2col, col2im
    pooling.py     max_pool2d, avg_pool2d, global_avg_pool2d
    batchnorm.py   batch_norm, over (N, C) or (N, C, H, W)
    linear.py      dense, flatten
    activations.py relu, leaky_relu, sigmoid, tanh
    dropout.py     dropout (inverted)
    padding.py     zero_pad2d (each side its own amount)
    loss.py        softmax_cross_entropy, softmax, log_softmax

`from npcnn.nn import functional as F`, then F.conv2d_forward(...).
"""

from npcnn.nn.functional.activations import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from npcnn.nn.functional.batchnorm import batch_norm_backward, batch_norm_forward
from npcnn.nn.functional.conv import (
    col2im,
    conv2d_backward,
    conv2d_forward,
    im2col,
    output_size,
)
from npcnn.nn.functional.dropout import dropout_backward, dropout_forward
from npcnn.nn.functional.linear import (
    dense_backward,
    dense_forward,
    flatten_backward,
    flatten_forward,
)
from npcnn.nn.functional.loss import (
    log_softmax,
    softmax,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from npcnn.nn.functional.padding import zero_pad2d_backward, zero_pad2d_forward
from npcnn.nn.functional.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)

__all__ = [
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "batch_norm_backward",
    "batch_norm_forward",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "flatten_backward",
    "flatten_forward",
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "im2col",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "log_softmax",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "output_size",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
    "tanh_backward",
    "tanh_forward",
    "zero_pad2d_backward",
    "zero_pad2d_forward",
]
