"""The receptive-field table against hand-computed, gradient-measured and published values."""

import pytest
import torch
import torchvision
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
