"""Reparameterisable convolution blocks (MobileOne, FastViT): several branches while training,
one convolution for inference.

Every multi-branch module here (MobileOne's identity/kxk/scale branches with their BatchNorms,
the large-kernel conv's 7x7 + 3x3 branches, RepMixer's ``x + gamma * (mixer(x) - norm(x))``, the
conditional position encoding's skip) computes a linear function of its input that one
convolution can compute. ``fold()`` replaces the module's branches by that convolution
(``reparam_conv``): the same features, less work. Built with ``folded=True``, a module has only
the folded convolution (the inference form, as saved after folding). Parameter names are timm's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Module):
    """A bias-free convolution followed by BatchNorm ('same' padding for odd kernels)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (kernel, bias) of one convolution equal to conv -> BN (eval statistics)."""
        return fold_bn(self.conv.weight, self.bn)


def fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv(kernel) -> bn  ==  conv(kernel * g / s) + (b - mean * g / s),  s = sqrt(var + eps)."""
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel: int, like: torch.Tensor) -> torch.Tensor:
    """The kernel of a convolution that returns its input (a 1 at each channel's centre)."""
    per_group = channels // groups
    out = torch.zeros(channels, per_group, kernel, kernel, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels)
    out[idx, idx % per_group, kernel // 2, kernel // 2] = 1
    return out


def pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean over space))))."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def make_divisible(value: float, divisor: int) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class MobileOneBlock(nn.Module):
    """act(se(identity BN + kxk conv-BN + 1x1 conv-BN)); folded: act(se(one kxk conv))."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        depthwise: bool = False,
        use_se: bool = False,
        use_act: bool = True,
        scale_branch: bool = True,
        conv_branch: bool = True,
        folded: bool = False,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride = cin, cout, kernel, stride
        self.groups = cin if depthwise else 1
        self.se = SqueezeExcite(cout, make_divisible(cout / 16, 1)) if use_se else nn.Identity()
        self.act = nn.GELU() if use_act else nn.Identity()
        self.reparam_conv: nn.Conv2d | None = None
        self.identity: nn.BatchNorm2d | None = None
        self.conv_kxk: nn.ModuleList | None = None
        self.conv_scale: ConvBN | None = None
        if folded:
            self.reparam_conv = self._conv()
            return
        if cin == cout and stride == 1:
            self.identity = nn.BatchNorm2d(cin)
        if conv_branch:
            self.conv_kxk = nn.ModuleList([ConvBN(cin, cout, kernel, stride, self.groups)])
        if kernel > 1 and scale_branch:
            self.conv_scale = ConvBN(cin, cout, 1, stride, self.groups)

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.cin, self.cout, k, self.stride, k // 2, groups=self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.identity is not None:
            out = out + self.identity(x)
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out = out + branch(x)
        return self.act(self.se(out))

    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel, bias) of the one convolution equal to the sum of the branches."""
        if self.reparam_conv is not None:
            assert self.reparam_conv.bias is not None
            return self.reparam_conv.weight, self.reparam_conv.bias
        like = next(self.parameters())
        shape = (self.cout, self.cin // self.groups, self.kernel, self.kernel)
        kernel = torch.zeros(shape, dtype=like.dtype, device=like.device)
        bias = torch.zeros(self.cout, dtype=like.dtype, device=like.device)
        if self.identity is not None:
            k, b = fold_bn(identity_kernel(self.cin, self.groups, self.kernel, like), self.identity)
            kernel, bias = kernel + k, bias + b
        if self.conv_scale is not None:
            k, b = self.conv_scale.folded()
            kernel, bias = kernel + pad_to(k, self.kernel), bias + b
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                k, b = branch.folded()  # type: ignore[operator]
                kernel, bias = kernel + k, bias + b
        return kernel, bias

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel, bias = self.folded_kernel()
        conv = self._conv().to(kernel.device, kernel.dtype)
        conv.weight.data.copy_(kernel.detach())
        assert conv.bias is not None
        conv.bias.data.copy_(bias.detach())
        self.reparam_conv = conv
        self.identity, self.conv_kxk, self.conv_scale = None, None, None


class LargeKernelConv(nn.Module):
    """act(se(kxk conv-BN + 3x3 conv-BN)), grouped by input channel; folded: one kxk conv."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, use_se: bool, act: bool, folded: bool
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride = cin, cout, kernel, stride
        self.reparam_conv: nn.Conv2d | None = None
        self.large_conv: ConvBN | None = None
        self.small_conv: ConvBN | None = None
        if folded:
            self.reparam_conv = self._conv()
        else:
            self.large_conv = ConvBN(cin, cout, kernel, stride, groups=cin)
            self.small_conv = ConvBN(cin, cout, 3, stride, groups=cin)
        self.se = SqueezeExcite(cout, make_divisible(cout * 0.25, 8)) if use_se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.cin, self.cout, k, self.stride, k // 2, groups=self.cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            assert self.large_conv is not None and self.small_conv is not None
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.large_conv is not None and self.small_conv is not None
        k_large, b_large = self.large_conv.folded()
        k_small, b_small = self.small_conv.folded()
        conv = self._conv().to(k_large.device, k_large.dtype)
        conv.weight.data.copy_((k_large + pad_to(k_small, self.kernel)).detach())
        assert conv.bias is not None
        conv.bias.data.copy_((b_large + b_small).detach())
        self.reparam_conv, self.large_conv, self.small_conv = conv, None, None


class LayerScale2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """x + gamma * (mixer(x) - norm(x)) with depthwise 3x3 MobileOne blocks; folded: one conv."""

    def __init__(self, dim: int, kernel: int = 3, folded: bool = False) -> None:
        super().__init__()
        self.dim, self.kernel = dim, kernel
        self.reparam_conv: nn.Conv2d | None = None
        self.norm: MobileOneBlock | None = None
        self.mixer: MobileOneBlock | None = None
        self.layer_scale: LayerScale2d | None = None
        if folded:
            self.reparam_conv = self._conv()
            return
        self.norm = MobileOneBlock(
            dim, dim, kernel, depthwise=True, use_act=False, scale_branch=False, conv_branch=False
        )
        self.mixer = MobileOneBlock(dim, dim, kernel, depthwise=True, use_act=False)
        self.layer_scale = LayerScale2d(dim)

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.dim, self.dim, k, 1, k // 2, groups=self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)  # type: ignore[no-any-return]
        assert self.norm is not None and self.mixer is not None and self.layer_scale is not None
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.norm is not None and self.mixer is not None and self.layer_scale is not None
        k_mix, b_mix = self.mixer.folded_kernel()
        k_norm, b_norm = self.norm.folded_kernel()
        gamma = self.layer_scale.gamma  # [C, 1, 1]
        kernel = identity_kernel(self.dim, self.dim, self.kernel, k_mix)
        kernel = kernel + gamma.unsqueeze(-1) * (k_mix - k_norm)
        bias = gamma.flatten() * (b_mix - b_norm)
        conv = self._conv().to(kernel.device, kernel.dtype)
        conv.weight.data.copy_(kernel.detach())
        assert conv.bias is not None
        conv.bias.data.copy_(bias.detach())
        self.reparam_conv, self.norm, self.mixer, self.layer_scale = conv, None, None, None


class RepCPE(nn.Module):
    """Conditional position encoding x + dwconv7x7(x); folded: one conv."""

    def __init__(self, dim: int, kernel: int = 7, folded: bool = False) -> None:
        super().__init__()
        self.dim, self.kernel = dim, kernel
        self.reparam_conv: nn.Conv2d | None = None
        self.pos_enc: nn.Conv2d | None = None
        if folded:
            self.reparam_conv = self._conv()
        else:
            self.pos_enc = self._conv()

    def _conv(self) -> nn.Conv2d:
        k = self.kernel
        return nn.Conv2d(self.dim, self.dim, k, 1, k // 2, groups=self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)  # type: ignore[no-any-return]
        assert self.pos_enc is not None
        return x + self.pos_enc(x)

    def fold(self) -> None:
        if self.reparam_conv is not None or self.pos_enc is None:
            return
        weight = self.pos_enc.weight
        conv = self._conv().to(weight.device, weight.dtype)
        kernel = identity_kernel(self.dim, self.dim, self.kernel, weight) + weight
        conv.weight.data.copy_(kernel.detach())
        assert conv.bias is not None and self.pos_enc.bias is not None
        conv.bias.data.copy_(self.pos_enc.bias.detach())
        self.reparam_conv, self.pos_enc = conv, None
