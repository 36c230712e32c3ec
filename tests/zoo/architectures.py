"""Small plain-torch networks for the test zoo, one per pattern the compiler must handle.

Each class is the *training-time* form of its architecture, so the exported ONNX keeps
the structure a deployment compiler is expected to simplify: BatchNormalization after
every convolution (folding), parallel conv branches summed before a ReLU (RepVGG /
MobileOne re-parameterization), HardSwish / HardSigmoid and a squeeze-excite Mul, and an
attention block written out as MatMul / Softmax / Transpose / Reshape.

Sizes are kept tiny (a few thousand to a few tens of thousands of parameters) so that
every model exports in a fraction of a second.  `init_norm_layers` gives BN layers
non-identity statistics; without it `running_mean = 0, running_var = 1, gamma = 1,
beta = 0` and a BN-folding bug would go unnoticed.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d without bias followed by BatchNorm2d ("same" padding for odd kernels)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    )


@torch.no_grad()
def init_norm_layers(model: nn.Module, example: torch.Tensor, generator: torch.Generator) -> None:
    """Give every BatchNorm / LayerNorm random affine parameters and BN data-driven stats.

    gamma ~ U(0.5, 1.5) and beta ~ N(0, 0.1) are drawn from `generator`; the BN running
    mean and variance are then the exact batch statistics (momentum=None accumulates a
    plain average) of three train-mode passes over `example`, so activations stay well
    scaled.  Random affine parameters also keep the exporter from deduplicating equal
    all-ones / all-zeros initializers into Identity nodes.  Leaves the model in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))]
    for norm in norms:
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.1)
    batch_norms = [m for m in norms if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for step in range(3):
        model(example + 0.1 * step * torch.randn(example.shape, generator=generator))
    for bn in batch_norms:
        bn.momentum = 0.1
    model.eval()


class LeNet(nn.Module):
    """LeNet-5 for 1x28x28 MNIST digits: two 5x5 conv + max-pool stages, three FC layers."""

    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsCNN(nn.Module):
    """A very small conv-BN-ReLU net for the 1x8x8 scikit-learn digits (about 3.8k params)."""

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 8, 3), nn.ReLU(),
            conv_bn(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> depthwise 3x3 -> 1x1 linear project (+ residual)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.body = nn.Sequential(
            conv_bn(c_in, hidden, 1), nn.ReLU6(),
            conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
            conv_bn(hidden, c_out, 1),  # linear bottleneck: no activation
        )
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_residual else y


class InvertedResidualNet(nn.Module):
    """MobileNetV2-style net: stem, three inverted-residual blocks (one stride 2), GAP, linear."""

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, stride=2), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, stride=1, expand=4),  # residual
            InvertedResidual(16, 24, stride=2, expand=4),  # downsample, no residual
            InvertedResidual(24, 24, stride=1, expand=4),  # residual
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, shortcut is identity or 1x1 conv+BN."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = conv_bn(c_in, c_out, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu(self.conv1(x)))
        return self.relu(y + self.shortcut(x))


class ResNetBasic(nn.Module):
    """A two-stage ResNet: identity basic block, then a stride-2 block with 1x1 downsample."""

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.layer1 = BasicBlock(16, 16, stride=1)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))))


class RepVGGBlock(nn.Module):
    """Training-time RepVGG block: ReLU(BN(conv3x3 x) + BN(conv1x1 x) + BN(x)).

    The identity branch exists only when the block keeps shape (stride 1, c_in == c_out);
    re-parameterization folds all branches into one 3x3 conv.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.dense = conv_bn(c_in, c_out, 3, stride)
        self.pointwise = conv_bn(c_in, c_out, 1, stride)
        self.identity = nn.BatchNorm2d(c_out) if stride == 1 and c_in == c_out else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x) + self.pointwise(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.relu(y)


class RepVGGBlockNet(nn.Module):
    """Stem conv+BN+ReLU, a stride-1 RepVGG block (3 branches), a stride-2 one (2 branches)."""

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.blocks = nn.Sequential(RepVGGBlock(16, 16, stride=1), RepVGGBlock(16, 32, stride=2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class MobileOneBlock(nn.Module):
    """Training-time MobileOne block (stride 1, channels kept), k over-parameterized branches.

    depthwise stage: ReLU(sum_i BN(dw3x3_i x) + BN(dw1x1 x) + BN(x))
    pointwise stage: ReLU(sum_i BN(pw1x1_i y) + BN(y))
    Every branch is linear, so each stage re-parameterizes into a single conv.
    """

    def __init__(self, channels: int, k: int = 3) -> None:
        super().__init__()
        c = channels
        self.dw_branches = nn.ModuleList(conv_bn(c, c, 3, groups=c) for _ in range(k))
        self.dw_scale = conv_bn(c, c, 1, groups=c)
        self.dw_identity = nn.BatchNorm2d(c)
        self.pw_branches = nn.ModuleList(conv_bn(c, c, 1) for _ in range(k))
        self.pw_identity = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw_scale(x) + self.dw_identity(x)
        for branch in self.dw_branches:
            y = y + branch(x)
        y = self.relu(y)
        z = self.pw_identity(y)
        for branch in self.pw_branches:
            z = z + branch(y)
        return self.relu(z)


class MobileOneBlockNet(nn.Module):
    """Stem conv+BN+ReLU (stride 2), two MobileOne blocks with k=3, GAP, linear head."""

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, stride=2), nn.ReLU())
        self.blocks = nn.Sequential(MobileOneBlock(16, k=3), MobileOneBlock(16, k=3))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class SqueezeExcite(nn.Module):
    """x * HardSigmoid(conv1x1(ReLU(conv1x1(GAP(x))))), as in MobileNetV3."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1), nn.ReLU(),
            nn.Conv2d(reduced, channels, 1), nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SEHardSwishNet(nn.Module):
    """MobileNetV3-flavoured net: conv+BN+HardSwish stages with a squeeze-excite in between."""

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, stride=2), nn.Hardswish(),
            conv_bn(16, 16, 3, groups=16), nn.Hardswish(),
            SqueezeExcite(16, 8),
            conv_bn(16, 32, 1), nn.Hardswish(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Attention(nn.Module):
    """Multi-head self-attention with explicit MatMul and Softmax (no fused SDPA op).

    Reshapes use the static token count and -1 for the batch, so the exported graph has
    constant Reshape targets and still works with a dynamic batch dimension.
    """

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.tokens, self.dim = heads, dim // heads, tokens, dim
        self.scale = self.head_dim ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, D) -> (B, heads, N, head_dim)
        return x.reshape(-1, self.tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(-1, self.tokens, self.dim)
        return self.out(y)


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + Attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, tokens: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """A ViT-style classifier: 8x8 patch embedding of a 3x32x32 image (16 tokens, dim 32),
    learned position embedding, two encoder layers (2 heads), final LayerNorm, mean pool."""

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 2, patch: int = 8) -> None:
        super().__init__()
        tokens = (self.input_shape[1] // patch) * (self.input_shape[2] // patch)
        self.tokens, self.dim = tokens, dim
        self.patch_embed = nn.Conv2d(self.input_shape[0], dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, tokens) for _ in range(2)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, D, H/p, W/p) -> (B, N, D)
        x = self.patch_embed(x).reshape(-1, self.dim, self.tokens).transpose(1, 2)
        x = self.layers(x + self.pos_embed)
        return self.head(self.norm(x).mean(dim=1))
