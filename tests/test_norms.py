"""The from-scratch normalizations equal torch.nn.functional; the factory's names and errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import NORM_LABELS, NORM_NAMES, batch_norm, group_norm, instance_norm, layer_norm, make_norm
from normlab.norms import (BatchRenorm2d, FilterResponseNorm2d, RenormSchedule, RMSGroupNorm,
                           batch_renorm, canonical_norm, filter_response_norm, renorm_correction,
                           rms_group_norm)

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
    "rms-group, one group (as F.rms_norm over C, H, W)": (
        lambda x, w, b: rms_group_norm(x, 1, w, b),
        lambda x, w, b: F.rms_norm(x, (C, H, W), eps=1e-5) * w[:, None, None] + b[:, None, None]),
    "rms-group, 4 groups (each group's slice by the formula)": (
        lambda x, w, b: rms_group_norm(x, 4, w, b),
        lambda x, w, b: torch.cat([g / torch.sqrt(g.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5)
                                   for g in x.split(C // 4, dim=1)], dim=1)
        * w[:, None, None] + b[:, None, None]),
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
    ("InstanceNorm", "instance"), ("in", "instance"), ("none", "none"), ("identity", "none"),
    ("frn", "frn"), ("FRN + TLU", "frn"), ("FilterResponseNorm", "frn"),
    ("FilterResponseNorm2d", "frn"), ("filter_response", "frn"),
    ("rms-group", "rms-group"), ("RMSGroupNorm", "rms-group"), ("rms_group", "rms-group"),
    ("batch-renorm", "batch-renorm"), ("BatchRenorm", "batch-renorm"), ("brn", "batch-renorm"),
    ("BatchRenorm2d", "batch-renorm"), ("batch_renormalization", "batch-renorm")])
def test_canonical_names(spelling, name):
    assert canonical_norm(spelling) == name


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown value 'weight' for argument norm") as info:
        make_norm("weight", 16)
    for name in NORM_NAMES:
        assert name in str(info.value)


def test_names_and_labels_keep_the_first_five_and_add_the_new_ones():
    assert NORM_NAMES == ("batch", "layer", "group", "instance", "none",
                          "frn", "rms-group", "batch-renorm")
    assert set(NORM_LABELS) == set(NORM_NAMES)
    assert [canonical_norm(n) for n in NORM_NAMES] == list(NORM_NAMES)
    assert [canonical_norm(NORM_LABELS[n]) for n in NORM_NAMES if n != "none"] == [
        n for n in NORM_NAMES if n != "none"]


@pytest.mark.parametrize("norm,layer", [("group", "GroupNorm"), ("rms-group", "RMSGroupNorm")])
def test_groups_must_divide_channels(norm, layer):
    with pytest.raises(ValueError,
                       match=rf"groups=5 does not divide num_channels=24: {layer} needs.*"
                             r"\[1, 2, 3, 4, 6, 8, 12, 24\]"):
        make_norm(norm, 24, groups=5)
    with pytest.raises(ValueError, match=r"groups=0 does not divide"):
        make_norm(norm, 24, groups=0)


@pytest.mark.parametrize("name,kind,params", [
    ("batch", nn.BatchNorm2d, 2 * C), ("layer", nn.GroupNorm, 2 * C),
    ("group", nn.GroupNorm, 2 * C), ("instance", nn.InstanceNorm2d, 2 * C),
    ("none", nn.Identity, 0), ("frn", FilterResponseNorm2d, 3 * C),
    ("rms-group", RMSGroupNorm, 2 * C), ("batch-renorm", BatchRenorm2d, 2 * C)])
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


# --------------------------------------------------------------------------------------
# Filter Response Normalization, RMS group norm, Batch Renormalization
# --------------------------------------------------------------------------------------

NEW_NORMS = ("frn", "rms-group", "batch-renorm")


def _frn_by_the_paper(x, weight, bias, tau, eps=1e-6):
    """Singh & Krishnan 2020, Eq. 1-4, written per image and channel as the paper does:
    nu^2 = sum_i x_i^2 / N over the N = H*W responses of one filter."""
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            responses = x[n, c]
            nu2 = (responses ** 2).sum() / responses.numel()
            y = weight[c] * responses / torch.sqrt(nu2 + eps) + bias[c]
            out[n, c] = torch.maximum(y, tau[c])
    return out


def test_filter_response_norm_matches_the_papers_formula_in_outputs_and_gradients():
    x, weight, bias = _inputs()
    tau = torch.randn(C, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tau.requires_grad_()
    out = filter_response_norm(x, weight, bias, tau)
    expected = _frn_by_the_paper(x, weight, bias, tau)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, weight, bias, tau), upstream)
    expected_grads = torch.autograd.grad(expected, (x, weight, bias, tau), upstream)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # the TLU clips at tau, channel by channel, and some units are clipped
    assert (out >= tau[None, :, None, None]).all()
    assert (out == tau[None, :, None, None].expand_as(out)).any()

    layer = FilterResponseNorm2d(C).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
        layer.tau.copy_(tau)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=1e-10)


def test_filter_response_norm_ignores_a_channels_scale_but_not_its_mean():
    x, weight, bias = _inputs()
    x = x.detach()
    layer = FilterResponseNorm2d(C).double()
    y = layer(x)
    scaled = x.clone()
    scaled[2, 3] *= 7.0                          # one image's channel, by a positive factor
    torch.testing.assert_close(layer(scaled), y, atol=1e-6, rtol=1e-6)
    shifted = x.clone()
    shifted[2, 3] += 5.0                         # no mean is subtracted: a shift shows
    moved = layer(shifted)
    assert not torch.allclose(moved[2, 3], y[2, 3], atol=1e-2)
    others = torch.ones(N, C, dtype=torch.bool)
    others[2, 3] = False
    torch.testing.assert_close(moved[others], y[others])     # per image and channel only
    # instance norm, which subtracts the mean, does not see the shift
    torch.testing.assert_close(instance_norm(shifted)[2, 3], instance_norm(x)[2, 3])
    # the same in training and evaluation, and an image's output needs no batch
    torch.testing.assert_close(layer.eval()(x[2:3]), y[2:3])
    assert not any(True for _ in layer.buffers())


def test_filter_response_norm_with_a_learned_eps():
    x, _, _ = _inputs()
    x = x.detach()
    layer = FilterResponseNorm2d(C, learnable_eps=True).double()
    assert sum(p.numel() for p in layer.parameters()) == 3 * C + 1
    assert layer.eps_learned.item() == pytest.approx(1e-4)
    with torch.no_grad():
        layer.eps_learned.fill_(-0.5)            # eps + |eps_learned|: never below eps
    y = layer(x * 1e-3)
    torch.testing.assert_close(y, filter_response_norm(x * 1e-3, tau=torch.zeros(C, dtype=x.dtype),
                                                       eps=1e-6 + 0.5))
    y.sum().backward()
    assert layer.eps_learned.grad is not None and layer.eps_learned.grad.abs().item() > 0
    assert "learnable_eps=True" in repr(layer)


def test_rms_group_norm_is_group_norm_when_the_groups_have_zero_mean():
    # the mean square is the variance plus the squared mean: without a mean the two agree,
    # and the mean is all that RMSGroupNorm keeps and GroupNorm removes
    x, weight, bias = _inputs()
    x = x.detach()
    groups = 2
    xg = x.reshape(N, groups, -1)
    centred = (xg - xg.mean(dim=2, keepdim=True)).reshape(x.shape)
    torch.testing.assert_close(rms_group_norm(centred, groups, weight, bias),
                               F.group_norm(centred, groups, weight, bias))
    assert not torch.allclose(rms_group_norm(x, groups, weight, bias),
                              F.group_norm(x, groups, weight, bias), atol=1e-2)
    # with one channel per group it is FRN without its TLU
    torch.testing.assert_close(rms_group_norm(x, C, weight, bias, eps=1e-6),
                               filter_response_norm(x, weight, bias))


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_rms_group_norm_layer_matches_the_reference(groups):
    x, weight, bias = _inputs()
    layer = RMSGroupNorm(C, groups=groups).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    expected = rms_group_norm(x, groups, weight, bias)
    torch.testing.assert_close(layer(x), expected)
    if groups == 1:
        torch.testing.assert_close(
            layer(x), F.rms_norm(x, (C, H, W), eps=1e-5) * weight[:, None, None] + bias[:, None, None])
    # per sample: an image's output does not depend on the rest of the batch
    torch.testing.assert_close(layer(x[:1]), layer(x)[:1])


def _renorm_pair(momentum=0.1, **limits):
    """A BatchRenorm2d and a BatchNorm2d with the same weights, float64."""
    torch.manual_seed(0)
    ours = BatchRenorm2d(C, momentum=momentum, **limits).double()
    reference = nn.BatchNorm2d(C, momentum=momentum).double()
    for layer in (ours, reference):
        with torch.no_grad():
            layer.weight.copy_(torch.linspace(0.5, 1.5, C))
            layer.bias.copy_(torch.linspace(-1, 1, C))
    return ours, reference


def test_batch_renorm_without_correction_is_batch_norm():
    # rmax=1, dmax=0 clip r to 1 and d to 0: BatchNorm2d's outputs, gradients, running
    # statistics (over several steps) and evaluation
    ours, reference = _renorm_pair(momentum=0.3, rmax=1.0, dmax=0.0)
    for step in range(4):
        x, _, _ = _inputs(seed=step)
        x = (x.detach() * (step + 1) + step).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), reference(x_ref)
        torch.testing.assert_close(y, y_ref)
        upstream = torch.randn_like(y)
        y.backward(upstream)
        y_ref.backward(upstream)
        torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    assert ours.num_batches_tracked.item() == reference.num_batches_tracked.item() == 4
    x, _, _ = _inputs(seed=9)
    ours.eval()
    reference.eval()
    torch.testing.assert_close(ours(x), reference(x))
    assert ours.state_dict().keys() == reference.state_dict().keys()
    fresh = BatchRenorm2d(C).double()
    fresh.load_state_dict(reference.state_dict())
    torch.testing.assert_close(fresh.eval()(x), reference(x))


def _running_stats_near(x, seed=5):
    """Running statistics 20% off the batch's, so that r and d are far from 1 and 0 but
    within the default limits (rmax=3, dmax=5)."""
    g = torch.Generator().manual_seed(seed)
    mean = x.mean(dim=(0, 2, 3)) + 0.5 * torch.randn(C, generator=g, dtype=x.dtype)
    var = x.var(dim=(0, 2, 3)) * (0.8 + 0.4 * torch.rand(C, generator=g, dtype=x.dtype))
    return mean, var


def test_batch_renorm_in_training_computes_the_running_statistics_output():
    # where the clipping does not bind, (x - mu_B) / sigma_B * r + d = (x - mu) / sigma: the
    # training output is what evaluation with the running statistics (before the step's
    # update) gives
    x, _, _ = _inputs()
    x = x.detach()
    layer, _ = _renorm_pair()
    mean, var = _running_stats_near(x)
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    r, d = renorm_correction(x, layer.running_mean, layer.running_var, layer.eps)
    assert (r - 1).abs().max() > 0.05 and d.abs().max() > 0.1           # a real correction
    assert (r < 3).all() and (r > 1 / 3).all() and (d.abs() < 5).all()  # not clipped
    expected = layer.eval()(x)
    y = layer.train()(x)
    torch.testing.assert_close(y, expected)
    # ... and differs from batch norm's, which normalizes with the batch's statistics
    assert not torch.allclose(y, F.batch_norm(x, None, None, layer.weight, layer.bias, True),
                              atol=1e-2)
    # the running statistics moved as BatchNorm2d's do
    m = x.numel() // C
    torch.testing.assert_close(layer.running_mean, 0.9 * mean + 0.1 * x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(layer.running_var,
                               0.9 * var + 0.1 * x.var(dim=(0, 2, 3), unbiased=False) * m / (m - 1))


def test_batch_renorm_clips_r_and_d():
    x, _, _ = _inputs()
    x = x.detach()
    running_mean = torch.full((C,), 100.0, dtype=x.dtype)      # far below the batch's mean
    running_var = torch.full((C,), 1e4, dtype=x.dtype)         # sigma far above sigma_B
    r, d = renorm_correction(x, running_mean, running_var, rmax=2.0, dmax=0.5)
    torch.testing.assert_close(r, torch.full((C,), 0.5, dtype=x.dtype))
    torch.testing.assert_close(d, torch.full((C,), -0.5, dtype=x.dtype))
    layer = BatchRenorm2d(C, rmax=2.0, dmax=0.5).double()
    layer.running_mean.copy_(running_mean)
    layer.running_var.copy_(running_var)
    torch.testing.assert_close(layer(x), F.batch_norm(x, None, None, training=True) * 0.5 - 0.5)


def test_batch_renorm_treats_r_and_d_as_constants_for_the_gradient():
    x, weight, bias = _inputs()
    mean, var = _running_stats_near(x.detach())
    layer = BatchRenorm2d(C).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    r, d = renorm_correction(x, mean, var)
    assert not r.requires_grad and not d.requires_grad
    upstream = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    out = layer(x)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), upstream)
    # batch norm's gradient with gamma * r as its weight and beta + gamma * d as its bias,
    # r and d constants
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    expected = F.batch_norm(x2, None, None, w2 * r, b2 + w2 * d, training=True)
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, torch.autograd.grad(expected, (x2, w2, b2), upstream)):
        torch.testing.assert_close(got, want)
    # had r and d been differentiated, the output would be the affine map
    # gamma * (x - mu) / sigma + beta of x, whose gradient is evaluation's: it is not
    x3 = x.detach().clone().requires_grad_()
    evaluated = F.batch_norm(x3, mean, var, weight, bias, training=False)
    torch.testing.assert_close(out, evaluated)
    (eval_grad,) = torch.autograd.grad(evaluated, x3, upstream)
    assert not torch.allclose(grads[0], eval_grad, atol=1e-3)
    # the from-scratch version agrees in outputs, gradients and running statistics
    running_mean, running_var = mean.clone(), var.clone()
    x4, w4, b4 = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    scratch = batch_renorm(x4, running_mean, running_var, w4, b4)
    torch.testing.assert_close(scratch, out)
    for got, want in zip(torch.autograd.grad(scratch, (x4, w4, b4), upstream), grads):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(running_mean, layer.running_mean)
    torch.testing.assert_close(running_var, layer.running_var)


def test_batch_renorm_in_evaluation_uses_the_running_statistics():
    x, weight, bias = _inputs()
    x = x.detach()
    mean, var = _running_stats_near(x)
    layer = BatchRenorm2d(C).double().eval()
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    expected = batch_norm(x, mean, var, layer.weight, layer.bias, training=False)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(batch_renorm(x, mean, var, layer.weight, layer.bias, training=False),
                               expected)
    torch.testing.assert_close(layer(x[:1]), expected[:1])    # each image alone
    torch.testing.assert_close(layer.running_mean, mean)      # nothing updated
    assert layer.num_batches_tracked.item() == 0


def test_batch_renorm_schedule_relaxes_the_limits():
    schedule = RenormSchedule(start=10, r_end=30, d_end=20, rmax=3.0, dmax=5.0)
    assert schedule(0) == schedule(10) == (1.0, 0.0)
    assert schedule(20) == (2.0, 5.0)
    assert schedule(30) == schedule(10_000) == (3.0, 5.0)
    assert RenormSchedule()(5_000) == (1.0, 0.0) and RenormSchedule()(40_000) == (3.0, 5.0)
    # the layer reads the limits for the number of batches it has seen in training
    ours, reference = _renorm_pair()
    ours.schedule = RenormSchedule(start=2, r_end=4, d_end=4)
    x, _, _ = _inputs()
    x = x.detach()
    assert ours.limits() == (1.0, 0.0)
    for _ in range(2):                                   # batch norm before ``start``
        torch.testing.assert_close(ours(x * 3), reference(x * 3))
    assert ours.limits() == (1.0, 0.0)
    ours(x * 3)
    assert ours.limits() == (2.0, 2.5)
    assert "schedule=RenormSchedule(start=2" in repr(ours)


@pytest.mark.parametrize("limits", [{"rmax": 0.5}, {"dmax": -1.0}, {"rmax": float("nan")}])
def test_batch_renorm_refuses_limits_that_cannot_clip(limits):
    with pytest.raises(ValueError, match="needs rmax >= 1 and dmax >= 0"):
        BatchRenorm2d(C, **limits)
    layer = BatchRenorm2d(C, schedule=lambda step: (limits.get("rmax", 2.0), limits.get("dmax", 1.0)))
    with pytest.raises(ValueError, match="needs rmax >= 1 and dmax >= 0"):
        layer(torch.randn(N, C, H, W))


@pytest.mark.parametrize("name", NEW_NORMS)
def test_new_layers_build_on_the_meta_device(name):
    with torch.device("meta"):
        layer = make_norm(name, C)
    assert all(p.device.type == "meta" for p in layer.parameters())
    assert sum(p.numel() for p in layer.parameters()) == (3 if name == "frn" else 2) * C


@pytest.mark.parametrize("name", NEW_NORMS)
def test_new_layers_take_statistics_in_fp32_under_bf16_autocast(name):
    # the output has the input's dtype (bf16), as torch's norm layers under autocast; the
    # statistics are those of the fp32 values, not of a bf16 computation
    torch.manual_seed(0)
    layer = make_norm(name, C, groups=2)
    conv = nn.Conv2d(3, C, 3, padding=1)
    x = torch.randn(N, 3, H, W) * 4 + 2
    twin = copy.deepcopy(layer)                         # batch-renorm's state moves
    with torch.autocast("cpu", dtype=torch.bfloat16):
        activations = conv(x)
        assert activations.dtype == torch.bfloat16
        y = layer(activations)
    assert y.dtype == torch.bfloat16
    with torch.no_grad():
        expected = twin(activations.float())            # fp32 throughout, training mode
    torch.testing.assert_close(y.float(), expected, atol=0.02, rtol=0.01)
    if name != "batch-renorm":                          # computed in fp32, rounded once
        assert torch.equal(y, expected.bfloat16())
    else:
        assert layer.running_mean.dtype == layer.running_var.dtype == torch.float32
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in layer.parameters())


@pytest.mark.parametrize("name", NEW_NORMS)
def test_new_layers_keep_channels_last(name):
    layer = make_norm(name, C, groups=2)
    x = torch.randn(N, C, H, W)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = layer(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, make_norm(name, C, groups=2)(x))
