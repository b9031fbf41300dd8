"""PyTorch twins of npcnn's benchmark networks, built from an npcnn model's state dict.

Each twin names its parameters and buffers as npcnn does (the preset docstrings
promise PyTorch's names), so `load_state_dict(strict=True)` checks that the two
networks hold the same tensors: a misnamed or misshaped twin fails loudly
instead of being timed.
"""

from __future__ import annotations

import functools

import numpy as np

from npcnn import nn

STEM_CHANNELS = 32


def load_npcnn_weights(model, initial: nn.Layer):
    """Copy npcnn's `initial` weights into the torch `model` (names must match); returns it."""
    import torch

    state = {k: torch.from_numpy(np.array(v)) for k, v in initial.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model


def torch_notebook_net(initial: nn.Sequential):
    """The notebook network in PyTorch, starting from npcnn's weights."""
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 18, 4, padding=1, bias=False),
        torch.nn.BatchNorm2d(18),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(18 * 13 * 13, 20, bias=False),
        torch.nn.BatchNorm1d(20),
        torch.nn.ReLU(),
        torch.nn.Linear(20, 10),
    )
    return load_npcnn_weights(model, initial)


@functools.cache
def _basic_block_class() -> type:
    """torchvision's BasicBlock, defined on first use: the npcnn side of a benchmark runs
    in a process that never imports torch."""
    import torch
    from torch import nn as tnn

    class BasicBlock(tnn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            shortcut = x if self.downsample is None else self.downsample(x)
            return torch.relu(y + shortcut)

    return BasicBlock


def torch_basic_block(cin: int, cout: int, stride: int):
    """ResNet's basic block in PyTorch, named as torchvision's and as
    `npcnn.models.resnet.basic_block` (conv1, bn1, conv2, bn2, downsample.0/.1)."""
    return _basic_block_class()(cin, cout, stride)


def torch_resnet(
    initial: nn.Model, stages: tuple[tuple[int, int, int], ...], num_classes: int = 10
):
    """The `resnet` preset in PyTorch (torchvision's layout and names), from npcnn's weights.

    `stages` is the preset's (channels, stride of the first block, blocks) per stage.
    """
    import torch
    from torch import nn as tnn

    class ResNet(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(1, STEM_CHANNELS, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(STEM_CHANNELS)
            cin = STEM_CHANNELS
            for i, (cout, stride, count) in enumerate(stages, start=1):
                blocks = [torch_basic_block(cin, cout, stride)]
                blocks += [torch_basic_block(cout, cout, 1) for _ in range(count - 1)]
                setattr(self, f"layer{i}", tnn.Sequential(*blocks))
                cin = cout
            self.fc = tnn.Linear(cin, num_classes)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
            for i in range(1, len(stages) + 1):
                x = getattr(self, f"layer{i}")(x)
            pooled = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.fc(pooled)

    return load_npcnn_weights(ResNet(), initial)
