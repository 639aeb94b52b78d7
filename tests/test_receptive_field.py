"""The receptive-field table against hand-computed, gradient-measured and published values."""

import math
import unittest.mock

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.ops import SqueezeExcitation

from normlab import Net
from normlab.receptive_field import receptive_field


def _square(value):
    return value if isinstance(value, int) else max(value)


# -- the oracle: which input pixels reach the centre output unit ------------------------

class _Reach(torch.autograd.Function):
    """Identity; its backward passes 1 where the gradient is non-zero. Put after every layer,
    it keeps whether a pixel reaches the output, which then neither vanishes nor overflows
    however deep the network."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return (grad != 0).to(grad.dtype)


def _reach(module, inputs, output):
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        return output
    return _Reach.apply(output / output.detach().abs().amax().clamp_min(1e-30))


def _smooth_max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """An average pool of a max pool's geometry: its gradient reaches every pixel of the
    window (a max's reaches one)."""
    assert dilation in (1, (1, 1)), "no average pool has a dilation"
    out = F.avg_pool2d(input, kernel_size, stride or None, padding, ceil_mode)
    return (out, torch.zeros(out.shape, dtype=torch.long)) if return_indices else out


def positive(model: nn.Module) -> nn.Module:
    """The model in evaluation mode with every parameter in [0.5, 1.5) (seeded) and fresh
    running statistics, so that no two paths' contributions cancel."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.requires_grad_(False)
            p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.reset_running_stats()
    return model.eval()


def measured_extent(model: nn.Module, input_size, axis: int = 2):
    """Input pixels (along ``axis``) that reach the centre output unit, and the output's grid,
    measured by back-propagating from that unit: positive weights (:func:`positive`), an
    input of ones, max-pools (modules or ``F.max_pool2d``) as average pools, and every
    layer's output scaled to at most 1 and passing back 1 where its gradient is non-zero."""
    positive(model)
    hooks = [m.register_forward_hook(_reach) for m in model.modules() if not list(m.children())]
    try:
        x = torch.ones(1, *input_size, requires_grad=True)
        with unittest.mock.patch.object(F, "max_pool2d", _smooth_max_pool2d):
            out = model(x)
        centre = tuple(s // 2 for s in out.shape[2:])
        out[(0, slice(None), *centre)].sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    touched = x.grad.abs().sum(dim=(0, 1)).amax(dim=3 - axis) > 0
    index = torch.nonzero(touched).flatten()
    return int(index.max() - index.min() + 1), out.shape[2:]


def measured_axes(model: nn.Module, input_size) -> tuple[int, int]:
    """Input pixels, per axis, that reach the centre output (see :func:`measured_extent`); a
    flat output counts as one unit."""
    return tuple(measured_extent(Unflatten(model), input_size, axis)[0] for axis in (2, 3))


class Unflatten(nn.Module):
    """The model with its output given a 1 x 1 grid where it has none."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x)
        return y if y.ndim == 4 else y.reshape(len(y), -1, 1, 1)


def predicted_axes(table, out_shape, image, clip: bool = True) -> tuple[int, int]:
    """The field of the centre output unit, per axis, clipped to the image (or, with
    ``clip=False``, None for an axis where the field reaches past the image); the whole
    image where the table says ``global``."""
    row = table.iloc[-1]
    pair = [v if isinstance(v, tuple) else (v, v)
            for v in (row.receptive_field, row.jump, row.start, row["global"])]
    extents = []
    for axis in range(2):
        r, j, start, whole = (p[axis] for p in pair)
        centre = start + (out_shape[axis] // 2) * j
        low, high = (0, image[axis] - 1) if whole else (centre - (r - 1) / 2, centre + (r - 1) / 2)
        inside = 0 <= low and high <= image[axis] - 1
        low, high = max(0, low), min(image[axis] - 1, high)
        extents.append(int(high - low + 1) if clip or inside else None)
    return tuple(extents)


def predicted_extent(table, out_shape, image_size):
    return predicted_axes(table, (out_shape[0],) * 2, (image_size,) * 2)[0]


# -- the project's network, published values, hand-computed tables ----------------------

class Features(nn.Module):
    """Net up to (and including) the given stage, so its output keeps a grid."""

    def __init__(self, model, last):
        super().__init__()
        names = [n for n, _ in model.named_children()]
        self.body = nn.Sequential(*[getattr(model, n) for n in names[: names.index(last) + 1]])

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("last", ["C2", "P1", "C5_C6", "C9_C10"])
def test_project_network_matches_gradient_measurement(last):
    model = Features(Net("none"), last)
    size = 64
    table = receptive_field(model, (3, size, size))
    measured, out_shape = measured_extent(model, (3, size, size))
    assert measured == predicted_extent(table, out_shape, size)


def body(name: str) -> nn.Module:
    """torchvision's ``name`` (weights=None) up to its head (the children before ``avgpool``,
    ``fc`` or ``classifier``), with :func:`positive` weights. Built on the meta device where
    torchvision allows it, so that a large classifier is never initialized."""
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet",
                                                                       "inception_v3") else {}
    try:
        with torch.device("meta"):
            model = getattr(torchvision.models, name)(weights=None, **kwargs)
    except NotImplementedError:   # RegNet computes its widths from tensors
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
    children = []
    for child_name, child in model.named_children():
        if child_name in ("avgpool", "fc", "classifier"):
            break
        children.append(child)
    return positive(nn.Sequential(*children).to_empty(device="cpu"))


@pytest.mark.parametrize("name,field", [("alexnet", 195), ("vgg16", 212)])
def test_published_values(name, field):
    """Araujo, Norris & Sim (2019), Distill, table of receptive fields (AlexNet: 195,
    VGG-16: 212, at the last feature layer)."""
    table = receptive_field(body(name), (3, 224, 224))
    assert table.iloc[-1].receptive_field == field


def test_hand_computed_dilation_padding_and_non_square():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=0), nn.Conv2d(1, 1, 3, dilation=2, padding=2),
                          nn.MaxPool2d(2), nn.Conv2d(1, 1, (1, 5), stride=(1, 2)))
    table = receptive_field(model, (1, 16, 16))
    assert list(table.receptive_field) == [3, 7, 8, (8, 16), (8, 16)]
    assert list(table.jump) == [1, 1, 2, (2, 4), (2, 4)]
    assert list(table.output_size) == [14, 14, 7, (7, 2), (7, 2)]
    assert list(table.start) == [1.0, 1.0, 1.5, 1.5, 1.5] or table.start.iloc[-1] == (1.5, 5.5)
    assert not table["global"].any()


def test_residual_branch_takes_the_union_of_paths():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.short = nn.Conv2d(1, 1, 1)
            self.long = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1))

        def forward(self, x):
            return self.short(x) + self.long(x)

    assert receptive_field(TwoPaths(), (1, 8, 8)).iloc[-1].receptive_field == 5


def test_project_network_table():
    table = receptive_field(Net("batch"))
    assert table.iloc[-1].layer == "output"
    assert table.set_index("layer").loc["P1", "jump"] == 2
    assert table.set_index("layer").loc["C5_C6.body.C6.conv", "receptive_field"] == 18
    assert table.iloc[-1].receptive_field == 72 and table.iloc[-1].output_size == 1


@pytest.mark.parametrize("norm", ["group", "layer", "frn", "rms-group", "batch-renorm"])
def test_every_norm_of_the_network_is_traced_whole(norm):
    # a norm's statistics over space are not the field: every norm gives batch norm's table
    assert receptive_field(Net(norm)).equals(receptive_field(Net("batch")))


# -- torchvision's CNN families ----------------------------------------------------------

#: One model per family, the field of its body's output (input pixels, both axes) and the
#: local field of the path without squeeze-and-excitation gates, where it has them (its
#: field is then global: the whole input). The README's table lists the same.
FAMILIES = [("alexnet", 195, None), ("vgg11", 150, None), ("resnet18", 435, None),
            ("squeezenet1_0", 155, None), ("densenet121", 2071, None), ("googlenet", 379, None),
            ("inception_v3", 1311, None), ("mobilenet_v2", 491, None),
            ("mobilenet_v3_small", "global", 639), ("shufflenet_v2_x0_5", 527, None),
            ("mnasnet0_5", 843, None), ("efficientnet_b0", "global", 851),
            ("regnet_x_400mf", 975, None), ("convnext_tiny", 1688, None)]


def _without_gates(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SqueezeExcitation):
                setattr(module, name, nn.Identity())
    return model


@pytest.mark.parametrize("name,field,local", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_torchvision_family_matches_the_gradient(name, field, local):
    """Exact against the gradient at an input that holds the centre unit's field along the
    measured axis: tall and thin (and then wide and thin) keeps a 2,000-pixel field cheap.
    With gates, the input is larger than the local field, so that only the gates can make the
    whole input reach the centre."""
    model = body(name)
    reach = local or field
    long, thin = 32 * math.ceil((reach + 128) / 32), 96 if name == "inception_v3" else 64
    for axis, size in ((0, (3, long, thin)), (1, (3, thin, long))):
        table = receptive_field(model, size)
        measured, out_shape = measured_extent(model, size, axis + 2)
        predicted = predicted_axes(table, out_shape, size[1:], clip=False)[axis]
        assert predicted is not None, f"the field of {name} reaches past a {long}-pixel input"
        assert measured == predicted
        last = table.iloc[-1]
        assert last["global"] == (field == "global")
        assert last.receptive_field == (tuple(size[1:]) if field == "global" else field)
    if local:
        assert receptive_field(_without_gates(model), (3, 224, 224)).iloc[-1].receptive_field == local
        assert local < long


@pytest.mark.parametrize("name,named", [
    ("vit_b_16", r"reshape in VisionTransformer\.forward .* does not keep the image's height"),
    ("swin_t", r"shifted_window_attention in layer 1\.0\.attn \(ShiftedWindowAttention\)"),
])
def test_transformer_families_are_refused_naming_the_layer(name, named):
    """Not CNN families, but what a student tries next: ViT's tokens merge the grid's axes,
    Swin's window attention is no layer the calculator knows."""
    model = getattr(torchvision.models, name)(weights=None)
    with pytest.raises((ValueError, NotImplementedError), match=named):
        receptive_field(model.features if hasattr(model, "features") else model, (3, 224, 224))


# -- what keeps the grid: elementwise modules, layout changes, gates ---------------------

def test_unknown_elementwise_modules_keep_the_field():
    """Hardsigmoid, Hardswish (not tagged pointwise by PyTorch), PReLU and Softmax2d (over
    channels) are found elementwise by what they do; a softmax over the width is not."""
    convs = [nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 5, padding=2)]
    plain = receptive_field(nn.Sequential(*convs), (2, 24, 24)).drop(columns="layer")
    model = nn.Sequential(convs[0], nn.Hardsigmoid(), nn.Hardswish(), nn.PReLU(2), nn.Softsign(),
                          convs[1], nn.Hardsigmoid())
    table = receptive_field(model, (2, 24, 24))
    assert table.drop(columns="layer").equals(plain)
    assert predicted_axes(table, (24, 24), (24, 24)) == measured_axes(model, (2, 24, 24)) == (7, 7)
    # (a softmax's gradient summed over its channels is 0: checked against the table only)
    softmax = nn.Sequential(convs[0], nn.Softmax2d(), convs[1])
    assert receptive_field(softmax, (2, 24, 24)).drop(columns="layer").equals(plain)
    with pytest.raises(NotImplementedError, match=r"layer 1 \(Softmax\)"):
        receptive_field(nn.Sequential(convs[0], nn.Softmax(dim=-1)), (2, 24, 24))


def channel_shuffle(x, groups: int = 2):
    n, c, h, w = x.size()
    return torch.transpose(x.view(n, groups, c // groups, h, w), 1, 2).contiguous().view(n, c, h, w)


class ChannelsLast(nn.Module):
    """A LayerNorm and a Linear over the channels of a channels-last tensor, as in ConvNeXt."""

    def __init__(self, channels):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(channels), nn.Linear(channels, channels)

    def forward(self, x):
        return self.linear(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class Forward(nn.Module):
    """A model whose forward is the given function (of self and x)."""

    def __init__(self, forward, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.function = forward

    def forward(self, x):
        return self.function(self, x)


def _convs():
    return nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1)


@pytest.mark.parametrize("layout", ["shuffle", "channels_last", "squeeze"])
def test_layout_changes_that_keep_the_grid_keep_the_field(layout):
    """A channel shuffle (view, transpose, view), a permute to channels-last and back, and
    squeezing and unsqueezing a size-1 axis move no pixel: the same table as without them."""
    middle = {"shuffle": lambda self, x: channel_shuffle(x),
              "channels_last": lambda self, x: self.layers[2](x),
              "squeeze": lambda self, x: x.unsqueeze(1).unsqueeze(-1).squeeze(-1).squeeze(1)}[layout]
    first, second = _convs()
    model = Forward(lambda self, x: self.layers[1](middle(self, self.layers[0](x))), first, second,
                    ChannelsLast(4))
    plain = receptive_field(nn.Sequential(*_convs()), (4, 20, 20))
    table = receptive_field(model, (4, 20, 20))
    assert list(table.receptive_field) == list(plain.receptive_field) == [3, 5, 5]
    assert predicted_axes(table, (10, 10), (20, 20)) == measured_axes(model, (4, 20, 20))


class Gated(nn.Module):
    """Two convolutions and a squeeze-and-excitation gate between them: global pooling, a
    small MLP, a product with the feature map (``pool`` picks the pooling's form)."""

    def __init__(self, pool: str = "module"):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.gate = SqueezeExcitation(4, 2)
        self.pool = pool

    def forward(self, x):
        x = self.conv1(x)
        if self.pool == "module":
            x = self.gate(x)
        else:   # the classic: mean over the grid, Linear layers, view back, expand
            s = x.mean((2, 3)) if self.pool == "mean" else F.adaptive_avg_pool2d(x, 1).flatten(1)
            s = torch.sigmoid(self.gate.fc2(torch.relu(self.gate.fc1(s[..., None, None]))))
            x = x * s.view(x.shape[0], -1, 1, 1).expand_as(x)
        return self.conv2(x)


@pytest.mark.parametrize("pool", ["module", "mean", "functional"])
def test_a_squeeze_and_excitation_gate_makes_the_field_global(pool):
    """Through the gate every unit sees the whole input: the table says so, with the input's
    size as the field, where it failed on 'paths meet with different grids' before."""
    model = Gated(pool)
    table = receptive_field(model, (3, 24, 20))
    last = table.iloc[-1]
    assert last["global"] and last.receptive_field == (24, 20) and last.output_size == (24, 20)
    assert not table["global"].iloc[0]   # conv1, before the gate
    assert measured_axes(model, (3, 24, 20)) == predicted_axes(table, (24, 20), (24, 20)) == (24, 20)


def test_a_path_through_a_module_with_a_tuple_output_is_followed():
    """MaxPool2d(return_indices=True) returns (values, indices): its path was dropped (the
    table said 3 pixels, from the other path alone)."""
    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.short = nn.Conv2d(1, 1, 3, padding=1)
            self.pool = nn.MaxPool2d(5, stride=1, padding=2, return_indices=True)
            self.long = nn.Conv2d(1, 1, 7, padding=3)

        def forward(self, x):
            pooled, _ = self.pool(x)
            return self.short(x) + self.long(pooled)

    model = Pooled()
    table = receptive_field(model, (1, 24, 24))
    assert table.iloc[-1].receptive_field == 11
    assert predicted_axes(table, (24, 24), (24, 24)) == measured_axes(model, (1, 24, 24)) == (11, 11)


@pytest.mark.parametrize("forward, field", [
    (lambda self, x: F.avg_pool2d(x, 5, stride=1, padding=2), 5),
    (lambda self, x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), 3),
    (lambda self, x: F.conv2d(x, torch.ones(1, 1, 7, 7), padding=3), 7),
    (lambda self, x: F.conv2d(x[:, :, 2:-1, ::2], torch.ones(1, 1, 3, 3)), (3, 5)),
    (lambda self, x: F.adaptive_avg_pool2d(F.conv2d(x, torch.ones(1, 1, 3, 3)), 7), (4, 3)),
])
def test_functional_convolutions_poolings_and_crops_match_the_gradient(forward, field):
    model = Forward(forward)
    table = receptive_field(model, (1, 16, 9))
    out = model(torch.zeros(1, 1, 16, 9)).shape[2:]
    assert table.iloc[-1].receptive_field == field
    assert predicted_axes(table, out, (16, 9)) == measured_axes(model, (1, 16, 9))


def test_a_crop_is_a_padding_below_zero_and_a_stride_of_its_step():
    row = receptive_field(Forward(lambda self, x: x[:, :, 2:-1, ::2]), (1, 16, 9)).iloc[0]
    assert (row.stride, row.padding, row.start, row.output_size) == ((1, 2), (-2, 0), (2.0, 0.0),
                                                                      (13, 5))


def test_flatten_and_linear_see_every_pixel():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))
    table = receptive_field(model, (1, 16, 16))
    assert predicted_axes(table, (1, 1), (16, 16)) == measured_axes(model, (1, 16, 16)) == (16, 16)


def test_a_reduction_over_the_grid_leaves_one_unit():
    model = Forward(lambda self, x: self.layers[0](x).amax(dim=-1, keepdim=True),
                    nn.Conv2d(1, 1, 3))
    last = receptive_field(model, (1, 16, 12)).iloc[-1]
    assert last.output_size == (14, 1) and last.receptive_field == (3, 12) and not last["global"]


def test_same_padding_is_the_padding_it_stands_for():
    same = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 5, padding="same")), (1, 16, 16))
    explicit = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 5, padding=2)), (1, 16, 16))
    assert same.iloc[-1].to_dict() == explicit.iloc[-1].to_dict()


# -- what is refused, and how --------------------------------------------------------------

class Recurrent(nn.Module):
    """Convolutional features one unit high, read along the width by an LSTM (as in CRNN);
    its (output, state) tuple made the old calculator end in an IndexError."""

    def __init__(self):
        super().__init__()
        self.conv, self.rnn = nn.Conv2d(3, 4, 3), nn.LSTM(4, 8)

    def forward(self, x):
        out, _ = self.rnn(torch.flatten(self.conv(x), 2).permute(2, 0, 1))
        return out


class Misaligned(nn.Module):
    """A stride-2 path added to a crop of the input: the same size, other jumps."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x) + x[:, :, :8, :8]


class PartlyPooled(nn.Module):
    """A gate pooled over the top-left corner only, broadcast onto the whole grid."""

    def forward(self, x):
        return x * x[:, :, :4, :4].mean((2, 3), keepdim=True)


@pytest.mark.parametrize("model, error, named", [
    (nn.Sequential(nn.ConvTranspose2d(1, 1, 3, padding=1)), ValueError,
     r"layer 0 \(ConvTranspose2d\) has no receptive field.*transposed convolution"),
    (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2)), ValueError,
     r"layer 1 \(Upsample\) has no receptive field.*upsampling"),
    (Forward(lambda self, x: torch.roll(x, 3, dims=-1)), ValueError, r"roll in Forward\.forward"),
    (Forward(lambda self, x: x if x.sum() > 0 else -x), NotImplementedError, "branches on the data"),
    (Recurrent(), ValueError, r"layer rnn \(LSTM\) has no receptive field.*recurrent"),
    (Misaligned(), ValueError, r"add in Misaligned\.forward joins paths .* 2 and 1 input pixels"),
    (PartlyPooled(), ValueError, r"mul in PartlyPooled\.forward broadcasts .* pixels -?0 to 3 only"),
    (Forward(lambda self, x: x.flatten(2)), ValueError, r"does not keep the image's height"),
    (Forward(lambda self, x: x.chunk(2, dim=-1)[0]), ValueError, r"chunk .* splits the image's width"),
    (Forward(lambda self, x: x.reshape(1, 1, 4, 4, 16)), ValueError, r"reshape .* height \(16 units\)"),
    (Forward(lambda self, x: x[:, :, torch.tensor([0, 2])]), NotImplementedError, "with a tensor"),
])
def test_what_has_no_receptive_field_is_refused_by_name(model, error, named):
    """A named layer, a reason and what to do; never an internal name (the old messages
    showed '_Axis(jump=..., ...)' or ended in IndexError)."""
    input_size = (3, 3, 32) if isinstance(model, Recurrent) else (1, 16, 16)
    with pytest.raises(error, match=named) as caught:
        receptive_field(model, input_size)
    message = str(caught.value)
    assert not any(word in message for word in ("_Axis", "_Grid", "Proxy", "GraphModule", "node",
                                                 "%", "ShapeProp"))


@pytest.mark.parametrize("input_size, named", [
    ((32, 32), r"input_size is one image's \(channels, height, width\).*got \(32, 32\)"),
    ((1, 3, 32, 32), r"input_size is one image's \(channels, height, width\).*got \(1, 3, 32, 32\)"),
    ((1, 32, 32), r"takes 3 channels, e\.g\. input_size=\(3, 32, 32\)"),
])
def test_an_input_size_of_the_wrong_rank_or_channels_says_what_it_must_be(input_size, named):
    with pytest.raises(ValueError, match=named) as caught:
        receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3)), input_size)
    assert "larger" not in str(caught.value)


def test_an_input_smaller_than_a_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match=r"input of size \(1, 4, 4\) does not pass.*larger"):
        receptive_field(nn.Sequential(nn.Conv2d(1, 1, 7)), (1, 4, 4))


# -- the property test against gradients -------------------------------------------------

class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


@st.composite
def networks(draw):
    """A random stack of convolutions (kernel, stride, padding, dilation), max and average
    pools and residual blocks, for a non-square input."""
    layers = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg", "residual"]))
        if kind == "residual":
            k = draw(st.sampled_from([1, 3, 5]))
            layers.append(Residual(nn.Sequential(nn.Conv2d(2, 2, k, padding=k // 2),
                                                 nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))))
            continue
        k = draw(st.integers(1, 5)) if kind == "conv" else draw(st.integers(2, 3))
        stride = draw(st.integers(1, 2))
        padding = draw(st.integers(0, k // 2))
        if kind == "conv":
            layers.append(nn.Conv2d(2, 2, k, stride, padding, dilation=draw(st.integers(1, 2))))
        else:
            pool = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
            layers.append(pool(k, stride, padding))
    return nn.Sequential(*layers), (2, draw(st.integers(24, 64)), draw(st.integers(24, 64)))


@settings(max_examples=60, deadline=None)
@given(networks())
def test_the_table_matches_the_gradient_on_random_networks(network):
    model, input_size = network
    try:
        table = receptive_field(model, input_size)
    except ValueError:   # the input shrank below a kernel: not a network
        assume(False)
    out = model(torch.zeros(1, *input_size)).shape[2:]
    # where the field reaches past the image, a dilated kernel's holes can meet its edge
    # and the gradient's extent is shorter than the field: compare fields inside the image
    predicted = predicted_axes(table, out, input_size[1:], clip=False)
    assume(None not in predicted)
    assert predicted == measured_axes(model, input_size)
