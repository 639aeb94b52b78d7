"""The from-scratch normalizations equal torch.nn.functional; the factory's names and errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import NORM_NAMES, batch_norm, group_norm, instance_norm, layer_norm, make_norm
from normlab.norms import canonical_norm

N, C, H, W = 6, 8, 5, 7


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, C, H, W, generator=g, dtype=torch.float64) * 3 + 1).requires_grad_()
    weight = torch.randn(C, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(C, generator=g, dtype=torch.float64).requires_grad_()
    return x, weight, bias


def _outputs_and_grads(fn, x, weight, bias):
    out = fn(x, weight, bias)
    upstream = torch.randn_like(out, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, (x, weight, bias), upstream)
    return out, grads


CASES = {
    "layer": (lambda x, w, b: layer_norm(x, w, b),
              lambda x, w, b: F.group_norm(x, 1, w, b)),
    "layer (as nn.LayerNorm over C, H, W)": (
        lambda x, w, b: layer_norm(x, w, b),
        lambda x, w, b: F.layer_norm(x, (C, H, W)) * w[:, None, None] + b[:, None, None]),
    "group": (lambda x, w, b: group_norm(x, 4, w, b),
              lambda x, w, b: F.group_norm(x, 4, w, b)),
    "instance": (lambda x, w, b: instance_norm(x, w, b),
                 lambda x, w, b: F.instance_norm(x, weight=w, bias=b)),
    "batch (training)": (
        lambda x, w, b: batch_norm(x, None, None, w, b, training=True),
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_scratch_matches_torch_in_outputs_and_gradients(case):
    ours, reference = CASES[case]
    x, weight, bias = _inputs()
    out, grads = _outputs_and_grads(ours, x, weight, bias)
    expected, expected_grads = _outputs_and_grads(reference, x, weight, bias)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_batch_norm_running_statistics_and_evaluation_match_torch():
    layer = nn.BatchNorm2d(C, momentum=0.3).double()
    running_mean, running_var = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for step in range(5):
        x, _, _ = _inputs(seed=step)
        x = x.detach() * (step + 1)
        layer.train()
        expected = layer(x)
        out = batch_norm(x, running_mean, running_var, layer.weight, layer.bias,
                         training=True, momentum=0.3)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(running_mean, layer.running_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(running_var, layer.running_var, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(running_var, torch.ones(C, dtype=torch.float64))
    x, _, _ = _inputs(seed=10)
    layer.eval()
    torch.testing.assert_close(
        batch_norm(x, running_mean, running_var, layer.weight, layer.bias, training=False),
        layer(x), atol=1e-5, rtol=1e-5)


def test_batch_norm_in_evaluation_treats_each_sample_alone():
    x, _, _ = _inputs()
    mean, var = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    whole = batch_norm(x, mean, var, training=False)
    first = batch_norm(x[:1], mean, var, training=False)
    torch.testing.assert_close(whole[:1], first)
    assert not torch.allclose(batch_norm(x, None, None)[:1], batch_norm(x[:2], None, None)[:1])


@pytest.mark.parametrize("spelling,name", [
    ("batch", "batch"), ("BatchNorm", "batch"), ("batch_norm", "batch"), ("BN", "batch"),
    ("BatchNorm2d", "batch"), ("layer", "layer"), ("LayerNorm", "layer"), ("ln", "layer"),
    ("GroupNorm", "group"), ("group-norm", "group"), ("gn", "group"),
    ("InstanceNorm", "instance"), ("in", "instance"), ("none", "none"), ("identity", "none")])
def test_canonical_names(spelling, name):
    assert canonical_norm(spelling) == name


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown value 'weight' for argument norm") as info:
        make_norm("weight", 16)
    for name in NORM_NAMES:
        assert name in str(info.value)


def test_groups_must_divide_channels():
    with pytest.raises(ValueError,
                       match=r"groups=5 does not divide num_channels=24.*\[1, 2, 3, 4, 6, 8, 12, 24\]"):
        make_norm("group", 24, groups=5)


@pytest.mark.parametrize("name,kind,params", [
    ("batch", nn.BatchNorm2d, 2 * C), ("layer", nn.GroupNorm, 2 * C),
    ("group", nn.GroupNorm, 2 * C), ("instance", nn.InstanceNorm2d, 2 * C),
    ("none", nn.Identity, 0)])
def test_factory_layers(name, kind, params):
    layer = make_norm(name, C, groups=2)
    assert isinstance(layer, kind)
    assert sum(p.numel() for p in layer.parameters()) == params
    x = torch.randn(N, C, H, W)
    assert layer(x).shape == x.shape


def test_layer_norm_is_one_group_over_channels_and_space():
    layer = make_norm("layer", C)
    x = torch.randn(N, C, H, W)
    y = layer(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(N), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(N), atol=1e-3, rtol=0)


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_group_norm_on_channels_last_input_matches_torch(groups):
    # normlab's GroupNorm runs channels_last input in NCHW; same numbers and gradients as
    # torch.nn.GroupNorm, and the caller gets its memory format back.
    torch.manual_seed(0)
    ours = make_norm("group", C, groups=groups)
    reference = nn.GroupNorm(groups, C)
    for layer in (ours, reference):
        layer.weight.data = torch.linspace(0.5, 1.5, C)
        layer.bias.data = torch.linspace(-1, 1, C)
    x = torch.randn(N, C, H, W).contiguous(memory_format=torch.channels_last)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    assert y_ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_ours, y_ref)
    grad = torch.randn_like(y_ref)
    y_ours.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    assert x_ours.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    assert ours.state_dict().keys() == reference.state_dict().keys()
