"""The network: layout, residual additions, parameter budget, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import MAX_PARAMS, NORM_NAMES, Net, Residual, count_parameters


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_every_norm_is_under_the_parameter_budget(norm):
    model = Net(norm)
    assert count_parameters(model) < MAX_PARAMS
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_layout_and_residual_additions():
    model = Net("batch")
    names = [name for name, _ in model.named_children()]
    assert names == ["C1", "C2", "c3", "P1", "C4", "C5_C6", "c7", "P2", "C8", "C9_C10",
                     "GAP", "c11", "flatten"]
    assert isinstance(model.C5_C6, Residual) and isinstance(model.C9_C10, Residual)
    assert [n for n, _ in model.C5_C6.body.named_children()] == ["C5", "C6"]
    assert model.c3.kernel_size == (1, 1) and model.c7.kernel_size == (1, 1)
    assert isinstance(model.P1, nn.MaxPool2d) and isinstance(model.GAP, nn.AdaptiveAvgPool2d)


def test_residual_adds_its_input():
    body = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(Residual(body)(x), x + body(x))


def test_without_residual_the_blocks_are_plain():
    model = Net("batch", residual=False)
    assert not any(isinstance(m, Residual) for m in model.modules())


@pytest.mark.parametrize("order,first", [("conv-relu-norm", nn.ReLU), ("conv-norm-relu", nn.BatchNorm2d)])
def test_block_order(order, first):
    block = Net("batch", order=order).C1
    assert isinstance(block[1], first)


def test_budget_is_enforced_unless_lifted():
    wide = (32, 64, 32, 64, 64, 64)
    with pytest.raises(ValueError, match=r"over the budget of fewer than 50,000.*max_params=None"):
        Net("batch", widths=wide)
    assert count_parameters(Net("batch", widths=wide, max_params=None)) > MAX_PARAMS


def test_bad_groups_and_order_raise():
    with pytest.raises(ValueError, match="does not divide"):
        Net("group", groups=5)
    with pytest.raises(ValueError, match="Valid values are conv-relu-norm, conv-norm-relu"):
        Net("batch", order="norm-first")


def test_global_average_pooling_matches_adaptive_pooling_and_keeps_channels_last():
    from normlab.model import GlobalAvgPool2d
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = GlobalAvgPool2d()(x)
    torch.testing.assert_close(y, nn.AdaptiveAvgPool2d(1)(x))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert not x.grad.is_contiguous()


def test_standardized_convolution_uses_zero_mean_unit_variance_weights():
    from normlab.model import StandardizedConv2d
    conv = StandardizedConv2d(3, 5, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(7).add_(2)
    x = torch.randn(2, 3, 8, 8)
    w = conv.weight
    w_hat = (w - w.mean((1, 2, 3), keepdim=True)) / w.std((1, 2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(conv(x), F.conv2d(x, w_hat, padding=1), atol=1e-4, rtol=1e-4)
    # eps sits under the square root (Eq. 5): weights whose variance is far below it are
    # divided by about sqrt(eps), not by their own standard deviation.
    with torch.no_grad():
        conv.weight.mul_(1e-4)
    w = conv.weight
    w_hat = (w - w.mean((1, 2, 3), keepdim=True)) / torch.sqrt(
        w.var((1, 2, 3), keepdim=True, unbiased=False) + conv.eps)
    torch.testing.assert_close(conv(x), F.conv2d(x, w_hat, padding=1), atol=1e-5, rtol=1e-4)
    assert Net("group", weight_standardization=True).C1.conv.__class__ is StandardizedConv2d
    assert Net("group").C1.conv.__class__ is nn.Conv2d


def test_only_the_network_without_normalization_has_convolution_biases():
    assert Net("none").C4.conv.bias is not None
    for norm in ("batch", "layer", "group", "instance"):
        assert Net(norm).C4.conv.bias is None
