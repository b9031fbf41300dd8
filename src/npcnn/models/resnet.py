"""A small residual network (ResNet's basic blocks) for 28x28 grayscale images.

stem:    conv 3x3 (1 -> 32) - BN - ReLU - maxpool 2                  -> (32, 14, 14)
stage 1: two basic blocks of 64 channels (the first projects 32 -> 64) -> (64, 14, 14)
stage 2: two basic blocks of 128 channels, the first with stride 2    -> (128, 7, 7)
head:    global average pooling (128) - dense 10

A basic block is conv 3x3 - BN - ReLU - conv 3x3 - BN, added to its input
(or to a 1x1 conv - BN projection of it when the shape changes), then ReLU.
Layer names follow torchvision's ResNet (`stem`, `layer1.0.conv1`,
`layer1.0.downsample.0`, `fc`), so the state dict maps onto a PyTorch model
written the same way.
"""

from __future__ import annotations

import numpy as np

from npcnn import nn
from npcnn.models.recipe import Preset, Recipe


def basic_block(
    in_shape: tuple[int, int, int], out_channels: int, stride: int, rng: np.random.Generator
) -> nn.Model:
    """ResNet's BasicBlock for inputs of `in_shape` (C, H, W), a graph used as a layer.

    conv1 (3x3, stride) - bn1 - ReLU - conv2 (3x3) - bn2, plus the input, or its
    `downsample` projection (1x1 conv with the stride, BN) when the channels or
    the size change; then ReLU.
    """
    x = nn.Input(in_shape)
    in_channels = in_shape[0]
    y = nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, rng=rng)(
        x, name="conv1"
    )
    y = nn.ReLU()(nn.BatchNorm2D(out_channels)(y, name="bn1"))
    y = nn.Conv2D(out_channels, out_channels, 3, padding=1, bias=False, rng=rng)(y, name="conv2")
    y = nn.BatchNorm2D(out_channels)(y, name="bn2")
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        projection = nn.Sequential(
            nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, rng=rng),
            nn.BatchNorm2D(out_channels),
        )
        shortcut = projection(x, name="downsample")
    return nn.Model(x, nn.ReLU()(nn.Add()([y, shortcut])))


def build_resnet(rng: np.random.Generator, num_classes: int = 10) -> nn.Model:
    """The stem, two stages of two basic blocks (64 and 128 channels), pooling and the head."""
    x = nn.Input((1, 28, 28))
    y = nn.Conv2D(1, 32, 3, padding=1, bias=False, rng=rng)(x, name="conv1")
    y = nn.MaxPool2D(2)(nn.ReLU()(nn.BatchNorm2D(32)(y, name="bn1")), name="maxpool")
    shape = (32, 14, 14)
    for stage, (channels, stride, count) in enumerate(STAGES, start=1):
        blocks = [basic_block(shape, channels, stride, rng)]
        shape = (channels, shape[1] // stride, shape[2] // stride)
        blocks += [basic_block(shape, channels, 1, rng) for _ in range(count - 1)]
        y = nn.Sequential(blocks)(y, name=f"layer{stage}")
    y = nn.Dense(shape[0], num_classes, rng=rng)(nn.GlobalAvgPool2D()(y, name="avgpool"), name="fc")
    return nn.Model(x, y)


#: (channels, stride of the first block, blocks) of each stage.
STAGES = ((48, 1, 1), (96, 2, 2))

RESNET = Preset(
    name="resnet",
    description="small ResNet (basic blocks of 64 and 128 channels), mirrored images",
    build=build_resnet,
    recipe=Recipe(
        optimizer="adamw",
        lr=2e-3,
        epochs=14,
        batch_size=128,
        weight_decay=0.05,
        schedule="cosine",
        augment="flip-crop",
        label_smoothing=0.1,
    ),
)
