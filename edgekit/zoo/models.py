"""Architectures of the reference models; each factory builds an untrained ``nn.Module``.

They use plain ``torch.nn`` layers only, so every technique (structured pruning, export,
TorchScript) can walk them like a user's model. ``forward`` arguments carry the input names of
the specs (``input``, ``input_ids``), which exporters use as graph input names.
"""

import torch
from torch import nn

from edgekit.zoo.datasets import TEXT_CLASSES, TEXT_LENGTH, TEXT_VOCAB_SIZE


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


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: LayerNorm → multi-head self-attention (MatMul → Softmax →
    MatMul) → residual, LayerNorm → Linear → GELU → Linear → residual.

    Written out rather than taken from ``nn.TransformerEncoderLayer``, whose inference fast path
    is one opaque fused kernel; here every exporter sees the plain operators a pretrained
    encoder has.
    """

    def __init__(self, dim: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(ff, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        q, k, v = self._split(self.query(h)), self._split(self.key(h)), self._split(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim**-0.5) + bias
        attn = torch.matmul(torch.softmax(scores, dim=-1), v)
        attn = attn.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        x = x + self.dropout(self.proj(attn))
        return x + self.dropout(self.ff2(self.act(self.ff1(self.norm2(x)))))


class TextEncoder(nn.Module):
    """A small pre-norm transformer encoder: token + position embeddings → blocks → LayerNorm.

    ``forward(input_ids, attention_mask)`` takes int64 ``(B, T)`` ids and a mask (1 = token,
    0 = right padding) and returns token states ``(B, T, dim)``, like a Hugging Face encoder's
    ``last_hidden_state``; the sentence embedding is their mask-aware mean (:func:`mean_pool`).
    """

    position_ids: torch.Tensor

    def __init__(
        self,
        vocab_size: int = TEXT_VOCAB_SIZE,
        max_length: int = TEXT_LENGTH,
        dim: int = 256,
        layers: int = 4,
        heads: int = 4,
        ff: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = nn.Embedding(max_length, dim)
        self.register_buffer("position_ids", torch.arange(max_length).unsqueeze(0))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[1]]
        x = self.dropout(self.tokens(input_ids) + self.positions(positions))
        # Additive key mask (B, 1, 1, T): 0 for tokens, -1e4 for padding (finite, fp16-safe).
        bias = (1.0 - attention_mask.to(x.dtype)).unsqueeze(1).unsqueeze(2) * -1e4
        for block in self.blocks:
            x = block(x, bias)
        return self.norm(x)


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mask-aware mean of token states ``(B, T, D)`` over the tokens of ``attention_mask``."""
    mask = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TextRecognizer(nn.Module):
    """CRNN for CTC: conv features → one vector per column → bidirectional LSTM → classes.

    ``forward(x)`` takes float images ``(B, 1, 32, W)`` (ink 1, background 0) of any width
    W ≥ 4 and returns per-column class scores ``(B, W // 4, classes)`` (logits; the CTC blank is
    the last class).

    Shaped like the recognisers users bring (CRNN, EasyOCR, PaddleOCR's CRNN head): a VGG-style
    conv stack (32-64-64 channels) and a bidirectional LSTM (128 per direction), scaled down so
    that it trains in about a minute.
    """

    def __init__(self, classes: int = 11, height: int = 32, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.stride = 4  # input columns per output position
        w = width
        self.features = nn.Sequential(
            _conv_bn(1, w, 3),
            nn.MaxPool2d(2),  # H/2, W/2
            _conv_bn(w, 2 * w, 3),
            nn.MaxPool2d(2),  # H/4, W/4
            _conv_bn(2 * w, 2 * w, 3),
            nn.MaxPool2d((2, 1)),  # H/8, W/4
        )
        self.column = nn.Linear(2 * w * (height // 8), 2 * hidden)
        self.rnn = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, C, H', T)
        f = f.permute(0, 3, 1, 2).flatten(2)  # (B, T, C·H')
        seq, _ = self.rnn(torch.relu(self.column(f)))
        return self.head(seq)


def text_encoder() -> TextEncoder:
    """Untrained ``text-encoder``."""
    return TextEncoder()


def text_recognizer() -> TextRecognizer:
    """Untrained ``text-recognizer``."""
    return TextRecognizer()
