"""Architectures of the reference models; each factory builds an untrained ``nn.Module``.

They use plain ``torch.nn`` layers only, so every technique (structured pruning, export,
TorchScript) can walk them like a user's model. ``forward`` arguments carry the input names of
the specs (``input``, ``input_ids``), which exporters use as graph input names.
"""

import torch
from torch import nn

from edgekit.zoo.datasets import TEXT_CLASSES, TEXT_VOCAB_SIZE


class DigitsCNN(nn.Module):
    """Conv32-MaxPool-Conv64-MaxPool-Conv64-Flatten-Dense64-Dense10 on ``(N, 1, 28, 28)``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 → 26 → 13
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 13 → 11 → 5
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),  # 5 → 3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(input))


class TabularMLP(nn.Module):
    """Dense50(ReLU)-Dense1(sigmoid) on 30 standardized features; a probability ``(N, 1)`` out."""

    def __init__(self, in_features: int = 30, hidden: int = 50) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid()
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.net(input)


class HouseRegressor(nn.Module):
    """A small MLP whose output ``(N, 1)`` is in the target's own units.

    The network predicts a standardized target; the buffers ``target_mean`` and ``target_std``
    (set from the training split by ``edgekit.zoo.training``, saved in the ``state_dict``) map it back.
    """

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, in_features: int = 10, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_std", torch.ones(1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.net(input) * self.target_std + self.target_mean


class TextClassifier(nn.Module):
    """Embedding → mean over non-padding tokens (id 0) → Linear → ReLU → Dropout → Linear."""

    def __init__(
        self,
        vocab_size: int = TEXT_VOCAB_SIZE,
        num_classes: int = len(TEXT_CLASSES),
        embed_dim: int = 64,
        hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.fc = nn.Linear(embed_dim, hidden)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != 0).unsqueeze(-1).to(torch.float32)
        summed = (self.embedding(input_ids) * mask).sum(dim=1)
        pooled = summed / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(self.relu(self.fc(pooled))))


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand, 3×3 depthwise, 1×1 linear projection, residual add."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn(cin, mid, 1),
            _conv_bn(mid, mid, 3, stride, groups=mid),
            _conv_bn(mid, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class EdgeCNN(nn.Module):
    """A small MobileNetV2-style network; any spatial size (global average pool before the head)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        # Stem stride 2, then (out channels, stride, expansion): total stride 16, e.g. 32×32 → 2×2,
        # 224×224 → 14×14.
        plan = [
            (w, 1, 2),
            (int(1.5 * w), 2, 4),
            (int(1.5 * w), 1, 4),
            (2 * w, 2, 4),
            (2 * w, 1, 4),
            (4 * w, 2, 4),
        ]
        blocks: list[nn.Module] = [_conv_bn(in_channels, w, 3, stride=2)]
        cin = w
        for cout, stride, expand in plan:
            blocks.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        blocks.append(_conv_bn(cin, 8 * w, 1))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(input)), 1))


def digits_cnn() -> DigitsCNN:
    """Untrained ``digits-cnn``."""
    return DigitsCNN()


def tabular_mlp() -> TabularMLP:
    """Untrained ``tabular-mlp``."""
    return TabularMLP()


def house_regressor() -> HouseRegressor:
    """Untrained ``house-regressor`` (its target buffers are mean 0, std 1 until trained)."""
    return HouseRegressor()


def text_classifier() -> TextClassifier:
    """Untrained ``text-classifier``."""
    return TextClassifier()


def edge_cnn() -> EdgeCNN:
    """Untrained ``edge-cnn``."""
    return EdgeCNN()
