"""The receptive-field table against hand-computed, gradient-measured and published values."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from normlab import Net
from normlab.receptive_field import receptive_field


def _square(value):
    return value if isinstance(value, int) else max(value)


def measured_extent(model: nn.Module, input_size, axis: int = 2) -> int:
    """Input pixels (along ``axis``) that reach the centre output unit, measured by
    back-propagating from it. Max-pools become average pools of the same geometry (a max
    passes the gradient to one pixel only), weights are made positive and the model put
    in evaluation mode, so that every pixel in the field gets a non-zero gradient."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride,
                                                         child.padding, ceil_mode=child.ceil_mode))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.01)
    model.eval()
    x = torch.ones(1, *input_size, requires_grad=True)
    out = model(x)
    centre = tuple(s // 2 for s in out.shape[2:])
    out[(0, slice(None), *centre)].sum().backward()
    touched = x.grad.abs().sum(dim=(0, 1)).amax(dim=3 - axis) > 0
    index = torch.nonzero(touched).flatten()
    return int(index.max() - index.min() + 1), out.shape[2:]


def predicted_extent(table, out_shape, image_size):
    row = table.iloc[-1]
    r, j, start = _square(row.receptive_field), _square(row.jump), row.start
    start = start if isinstance(start, float) else start[0]
    centre = start + (out_shape[0] // 2) * j
    low, high = max(0, centre - (r - 1) / 2), min(image_size - 1, centre + (r - 1) / 2)
    return int(high - low + 1)


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


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "alexnet", "squeezenet1_0", "densenet121"])
def test_torchvision_feature_extractors_match_gradient_measurement(name):
    model = getattr(torchvision.models, name)()
    features = model.features if hasattr(model, "features") else nn.Sequential(
        *list(model.children())[:-2])
    size = 320
    table = receptive_field(features, (3, size, size))
    measured, out_shape = measured_extent(features, (3, size, size))
    assert measured == predicted_extent(table, out_shape, size)


@pytest.mark.parametrize("name,field", [("alexnet", 195), ("vgg16", 212)])
def test_published_values(name, field):
    """Araujo, Norris & Sim (2019), Distill, table of receptive fields (AlexNet: 195,
    VGG-16: 212, at the last feature layer)."""
    table = receptive_field(getattr(torchvision.models, name)().features, (3, 224, 224))
    assert table.iloc[-1].receptive_field == field


def test_hand_computed_dilation_padding_and_non_square():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=0), nn.Conv2d(1, 1, 3, dilation=2, padding=2),
                          nn.MaxPool2d(2), nn.Conv2d(1, 1, (1, 5), stride=(1, 2)))
    table = receptive_field(model, (1, 16, 16))
    assert list(table.receptive_field) == [3, 7, 8, (8, 16), (8, 16)]
    assert list(table.jump) == [1, 1, 2, (2, 4), (2, 4)]
    assert list(table.output_size) == [14, 14, 7, (7, 2), (7, 2)]
    assert list(table.start) == [1.0, 1.0, 1.5, 1.5, 1.5] or table.start.iloc[-1] == (1.5, 5.5)


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


def test_unknown_spatial_layer_raises():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2))
    with pytest.raises(NotImplementedError, match="Upsample"):
        receptive_field(model, (1, 8, 8))


# -- what the calculator refuses, and the property test against gradients ---------------

class Forward(nn.Module):
    """A model whose forward is the given function (of self and x)."""

    def __init__(self, forward, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.function = forward

    def forward(self, x):
        return self.function(self, x)


@pytest.mark.parametrize("model, named", [
    (nn.Sequential(nn.ConvTranspose2d(1, 1, 3, padding=1)), "transposed convolution"),
    (Forward(lambda self, x: F.avg_pool2d(x, 5, stride=1, padding=2)), "avg_pool2d"),
    (Forward(lambda self, x: F.max_pool2d(x, 2)), "max_pool2d"),
    (Forward(lambda self, x: F.conv2d(x, torch.ones(1, 1, 7, 7), padding=3)), "conv2d"),
    (Forward(lambda self, x: torch.roll(x, 3, dims=-1)), "roll"),
    (Forward(lambda self, x: x if x.sum() > 0 else -x), "branches on the data"),
])
def test_what_the_recurrence_cannot_give_exactly_is_refused_by_name(model, named):
    with pytest.raises(NotImplementedError, match=named):
        receptive_field(model, (1, 16, 16))


def test_flatten_and_linear_see_every_pixel():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))
    table = receptive_field(model, (1, 16, 16))
    assert predicted_axes(table, (1, 1), (16, 16)) == measured_axes(model, (1, 16, 16)) == (16, 16)


def test_same_padding_is_the_padding_it_stands_for():
    same = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 5, padding="same")), (1, 16, 16))
    explicit = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 5, padding=2)), (1, 16, 16))
    assert same.iloc[-1].to_dict() == explicit.iloc[-1].to_dict()


def test_an_input_smaller_than_a_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match=r"input of size \(1, 4, 4\) does not pass.*larger"):
        receptive_field(nn.Sequential(nn.Conv2d(1, 1, 7)), (1, 4, 4))


def measured_axes(model: nn.Module, input_size) -> tuple[int, int]:
    """Input pixels, per axis, whose gradient reaches the centre output (see
    :func:`measured_extent`); a flat output counts as one unit."""
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
    ``clip=False``, None for an axis where the field reaches past the image)."""
    row = table.iloc[-1]
    pair = [v if isinstance(v, tuple) else (v, v)
            for v in (row.receptive_field, row.jump, row.start)]
    extents = []
    for axis in range(2):
        r, j, start = (p[axis] for p in pair)
        centre = start + (out_shape[axis] // 2) * j
        low, high = centre - (r - 1) / 2, centre + (r - 1) / 2
        inside = 0 <= low and high <= image[axis] - 1
        low, high = max(0, low), min(image[axis] - 1, high)
        extents.append(int(high - low + 1) if clip or inside else None)
    return tuple(extents)


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


def test_a_squeeze_or_reduction_of_the_grid_is_refused_and_group_norm_is_traced_whole():
    squeeze = Forward(lambda self, x: self.layers[0](x).squeeze(1), nn.Conv2d(1, 1, 3))
    with pytest.raises(NotImplementedError, match="squeeze"):
        receptive_field(squeeze, (1, 16, 16))
    tables = {norm: receptive_field(Net(norm)) for norm in ("batch", "group", "layer")}
    assert tables["group"].equals(tables["batch"]) and tables["layer"].equals(tables["batch"])
