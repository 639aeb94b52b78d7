"""The network: layout, residual additions, parameter budget, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import MAX_PARAMS, NORM_NAMES, Config, Net, Residual, count_parameters, fit
from normlab.norms import BatchRenorm2d, FilterResponseNorm2d, RMSGroupNorm
from normlab.train import Pipeline, _parameters


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
    for norm in ("batch", "layer", "group", "instance", "frn", "rms-group", "batch-renorm"):
        assert Net(norm).C4.conv.bias is None


#: Trainable parameters of Net(norm) with the default widths: the four affine norms and
#: RMS group norm and Batch Renormalization have 2 per channel of the ten 3x3 blocks (216
#: channels), FRN 3 (its threshold), none the convolution biases instead.
PARAMETERS = {"batch": 48_554, "layer": 48_554, "group": 48_554, "instance": 48_554,
              "none": 48_338, "frn": 48_770, "rms-group": 48_554, "batch-renorm": 48_554}


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_parameter_counts(norm):
    assert count_parameters(Net(norm)) == PARAMETERS[norm]
    # Config counts them on the meta device, without building weights
    assert _parameters(norm, 4, Net().widths, True, "conv-relu-norm") == PARAMETERS[norm]


@pytest.mark.parametrize("spelling,norm,layer", [
    ("FRN + TLU", "frn", FilterResponseNorm2d), ("RMSGroupNorm", "rms-group", RMSGroupNorm),
    ("BatchRenorm", "batch-renorm", BatchRenorm2d)])
def test_net_and_config_take_the_new_norms(spelling, norm, layer):
    config = Config(norm=spelling)
    assert config.norm == norm
    model = config.build_model()
    blocks = [model.C1, model.C2, model.C4, model.C5_C6.body.C5, model.C5_C6.body.C6,
              model.C8, model.C9_C10.body.C9, model.C9_C10.body.C10]
    assert all(isinstance(block.norm, layer) for block in blocks)
    assert isinstance(model.C1[1], nn.ReLU) and model.C1[2] is model.C1.norm   # ReLU kept
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_rms_group_norm_takes_the_networks_group_count():
    model = Net("rms-group", groups=8)
    assert model.C1.norm.groups == 8 and model.C8.norm.groups == 8
    with pytest.raises(ValueError, match=r"groups=5 does not divide num_channels=16: RMSGroupNorm"):
        Net("rms-group", groups=5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("norm", ["frn", "rms-group", "batch-renorm"])
def test_the_new_norms_train_in_fit(norm, precision, tiny_data):
    # two epochs of 7 steps on the synthetic images, in fp32 and in bf16 autocast on the
    # CPU: finite losses (fit raises Diverged otherwise), weights that moved, finite
    # weights and evaluation outputs
    config = Config(norm=norm, epochs=2, batch_size=32, lr=0.05, widths=(8,) * 6,
                    precision=precision)
    model = config.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pipeline = Pipeline.for_config(config, tiny_data, device="cpu")
    assert pipeline.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    history = fit(model, tiny_data, config, pipeline, progress=False)
    assert len(history.train_loss) == 2
    assert all(torch.isfinite(torch.tensor(v)).all() for v in history.to_dict().values())
    state = model.state_dict()
    assert all(torch.isfinite(t.float()).all() for t in state.values())
    assert not torch.equal(state["C4.norm.weight"], before["C4.norm.weight"])
    if norm == "batch-renorm":
        assert state["C4.norm.num_batches_tracked"].item() == 14
        assert not torch.equal(state["C4.norm.running_var"], before["C4.norm.running_var"])
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(pipeline.inputs(tiny_data.test_images[:8]).float())).all()
