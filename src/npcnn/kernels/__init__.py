"""The fast kernels: `npcnn.nn.functional`'s operations with the same signatures, computed fast.

    y, cache = conv2d_forward(x, weight, bias, stride, padding)
    dx, dweight, dbias = conv2d_backward(dy, cache, need_input_grad=True)

Threads, scratch memory and the channels-last layout live here and nowhere
else: the kernels take and return (N, C, H, W)-shaped arrays like the
reference ones, which may be views of channels-last memory (`layout.py`),
split their loops over the cores (`npcnn.runtime.threads`) and keep BLAS to
one thread while they do, and take their big arrays from the step cache and
their temporaries from per-thread scratch (`npcnn.runtime.memory`). A
forward's `need_cache=False` lets a kernel skip what only the backward needs.

    conv.py         conv2d (groups=1): im2col of channels-last memory, GEMM per chunk
    pooling.py      max_pool2d, avg_pool2d, global_avg_pool2d, and max_pool2d_relu (the two commute)
    batchnorm.py    batch_norm, and the statistics and backward formula every
                    batch-norm kernel shares
    linear.py       dense, flatten
    activations.py  relu
    fused.py        batch_norm_relu_max_pool2d, batch_norm_relu, flatten_dense:
                    the kernels of the planner's fusion table (`npcnn.nn.fusion`)

The other operations (leaky_relu, sigmoid, tanh, dropout, the loss) have no
faster form: the fast kernel set (`npcnn.nn.backend`) uses the reference's.
The tests hold every kernel here to the reference computation in float64.
"""

from npcnn.kernels.activations import relu_backward, relu_forward
from npcnn.kernels.batchnorm import batch_norm_backward, batch_norm_forward
from npcnn.kernels.conv import conv2d_backward, conv2d_forward
from npcnn.kernels.fused import (
    batch_norm_relu_backward,
    batch_norm_relu_forward,
    batch_norm_relu_max_pool2d_backward,
    batch_norm_relu_max_pool2d_forward,
    flatten_dense_backward,
    flatten_dense_forward,
)
from npcnn.kernels.linear import dense_backward, dense_forward, flatten_backward, flatten_forward
from npcnn.kernels.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool2d_relu_backward,
    max_pool2d_relu_forward,
)

__all__ = [
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_relu_backward",
    "batch_norm_relu_forward",
    "batch_norm_relu_max_pool2d_backward",
    "batch_norm_relu_max_pool2d_forward",
    "conv2d_backward",
    "conv2d_forward",
    "dense_backward",
    "dense_forward",
    "flatten_backward",
    "flatten_dense_backward",
    "flatten_dense_forward",
    "flatten_forward",
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "max_pool2d_relu_backward",
    "max_pool2d_relu_forward",
    "relu_backward",
    "relu_forward",
]
