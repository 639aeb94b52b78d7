"""Loading (image folder, canonical archive), errors, statistics and augmentation."""

import errno
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image

import normlab.book.runs
import normlab.data
from normlab import CIFAR10, Config, augment, channel_stats, load_data
from normlab.book import run
from normlab.data import load_cifar10, load_image_folder, normalize
from normlab.train import Pipeline

from conftest import CLASSES, synthetic_images


def test_image_folder_loads_uint8_tensors_and_caches(image_folder, tmp_path):
    data = load_image_folder(image_folder)
    assert data.train_images.shape == (80, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (30, 3, 32, 32)
    assert data.classes == CLASSES
    images, labels = synthetic_images(80, 0)
    # the folders are read class by class: compare as sets of (label, image)
    order = torch.argsort(labels, stable=True)
    torch.testing.assert_close(data.train_labels, labels[order])
    torch.testing.assert_close(data.train_images, images[order])
    assert list((tmp_path / "cache").glob("imagefolder-*.pt"))
    again = load_data(image_folder)
    assert again.identity == data.identity
    torch.testing.assert_close(again.test_images, data.test_images)


def test_identity_changes_with_the_files(image_folder):
    before = load_image_folder(image_folder).identity
    next((image_folder / "test" / "cat").iterdir()).unlink()
    assert load_image_folder(image_folder).identity != before


def test_canonical_archive_through_torchvision(canonical_cifar, monkeypatch):
    monkeypatch.setenv("NORMLAB_DATA", str(canonical_cifar))
    data = load_data()
    assert data.train_images.shape == (50, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    assert data.classes == CLASSES and data.identity.startswith("cifar10-")
    images, labels = synthetic_images(10, seed=9)   # one image per class, in label order
    torch.testing.assert_close(data.test_images, images)
    torch.testing.assert_close(data.test_labels, labels)


def as_image_folder(archive_root, folder):
    """The archive's images as ``folder/<split>/<class>/NNNN.png``, NNNN the image's rank
    within its class in the archive's order (the layout of the lossless shared copy)."""
    for split, train in (("train", True), ("test", False)):
        ds = torchvision.datasets.CIFAR10(archive_root, train=train)
        rank = {}
        for image, label in zip(ds.data, ds.targets):
            path = folder / split / ds.classes[label] / f"{rank.setdefault(label, 0):04d}.png"
            rank[label] += 1
            path.parent.mkdir(parents=True, exist_ok=True)
            torchvision.io.write_png(torch.from_numpy(image).permute(2, 0, 1).contiguous(), str(path))
    return folder


def test_the_archive_and_a_folder_of_its_images_are_one_data_set(canonical_cifar, tmp_path,
                                                                  monkeypatch):
    archive = load_cifar10(canonical_cifar)
    folder = load_image_folder(as_image_folder(canonical_cifar, tmp_path / "folder"))
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(archive, name), getattr(folder, name)), name
    assert archive.identity == folder.identity
    assert torch.equal(archive.train_labels, archive.train_labels.sort(stable=True).values)
    assert not torch.equal(archive.train_images,             # the archive's order was another
                           torch.from_numpy(torchvision.datasets.CIFAR10(canonical_cifar).data)
                           .permute(0, 3, 1, 2))
    # the same batches for a seed, and the same result
    config = Config(epochs=2, batch_size=10, lr=0.05, widths=(8,) * 6)
    trained = run(config, archive, progress=False)
    monkeypatch.setattr(normlab.book.runs, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert run(config, folder, progress=False).test_accuracy == trained.test_accuracy


def test_a_relative_root_finds_the_decoded_data_of_the_absolute(image_folder, tmp_path,
                                                                 monkeypatch):
    data = load_image_folder(image_folder)
    monkeypatch.chdir(image_folder.parent)
    monkeypatch.setattr(normlab.data, "_decode", lambda *a: pytest.fail("decoded again"))
    assert load_image_folder(Path(image_folder.name)).identity == data.identity
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 1


def rewrite_uncompressed(path, edit=None):
    """Write the PNG at ``path`` again without compression (its size is set by its shape),
    with ``edit`` applied to its pixels, and give it back its modification time."""
    stat = path.stat()
    image = torchvision.io.decode_image(str(path))
    if edit:
        edit(image)
    torchvision.io.write_png(image, str(path), compression_level=0)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return image


def flip_a_bit(image):
    image[0, 5, 5] ^= 1


def test_two_folders_of_same_size_same_time_images_each_give_their_own_pixels(image_folder,
                                                                             tmp_path):
    """An uncompressed export and an edited copy with preserved times: the same names,
    sizes and modification times, other pixels."""
    path = image_folder / "train" / "cat" / "0003.png"
    rewrite_uncompressed(path)
    first = load_image_folder(image_folder)
    copy = tmp_path / "copy"
    shutil.copytree(image_folder, copy)                # copy2: the times are preserved
    edited = rewrite_uncompressed(copy / "train" / "cat" / "0003.png", flip_a_bit)
    assert (copy / "train" / "cat" / "0003.png").stat().st_size == path.stat().st_size
    second = load_image_folder(copy)
    assert second.identity != first.identity
    assert any(torch.equal(image, edited) for image in second.train_images)
    assert not any(torch.equal(image, edited) for image in first.train_images)


def test_an_edit_that_keeps_size_and_modification_time_is_decoded_again(image_folder):
    path = image_folder / "train" / "cat" / "0003.png"
    rewrite_uncompressed(path)
    before = load_image_folder(image_folder).identity
    stat = path.stat()
    rewrite_uncompressed(path, flip_a_bit)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert load_image_folder(image_folder).identity != before


def test_a_same_size_edit_of_one_pixel_changes_the_identity(image_folder, tmp_path):
    path = image_folder / "train" / "cat" / "0003.png"
    image = torchvision.io.decode_image(str(path))
    torchvision.io.write_png(image, str(path), compression_level=0)   # size set by the shape
    before, size = load_image_folder(image_folder).identity, path.stat().st_size
    image[0, 5, 5] ^= 1
    torchvision.io.write_png(image, str(path), compression_level=0)
    assert path.stat().st_size == size
    after = load_image_folder(image_folder)
    assert after.identity != before
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 2   # decoded again


@pytest.mark.parametrize("damage", [b"", b"garbage", "truncate"])
def test_a_decoded_data_cache_that_does_not_load_is_rebuilt(image_folder, tmp_path, damage):
    data = load_image_folder(image_folder)
    cached, = (tmp_path / "cache").glob("imagefolder-*.pt")
    cached.write_bytes(cached.read_bytes()[:1000] if damage == "truncate" else damage)
    with pytest.warns(UserWarning, match=f"cache {cached} does not load.*decoding the images again"):
        again = load_image_folder(image_folder)
    assert again.identity == data.identity and torch.equal(again.train_images, data.train_images)
    assert load_image_folder(image_folder).identity == data.identity   # rebuilt: no warning


@pytest.mark.parametrize("failure", ["/dev/null", "a file", "no space", "read-only"])
def test_a_cache_that_cannot_be_written_warns_once_and_the_data_loads(image_folder, tmp_path,
                                                                     monkeypatch, failure):
    expected = load_image_folder(image_folder)
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "other-cache"))
    if failure in ("/dev/null", "a file"):
        (tmp_path / "a file").write_text("not a folder")
        monkeypatch.setenv("NORMLAB_CACHE", "/dev/null" if failure == "/dev/null"
                           else str(tmp_path / "a file"))
        message = r"is not a folder.*point NORMLAB_CACHE at a folder"
    else:
        error = (OSError(errno.ENOSPC, f"No space left on {tmp_path}: free space and rerun")
                 if failure == "no space" else OSError(errno.EROFS, "Read-only file system"))

        def refused(*args):
            raise error

        monkeypatch.setattr(normlab.data, "atomic_save", refused)
        message = "No space left on" if failure == "no space" else "Read-only file system"
    with pytest.warns(UserWarning, match=rf"not cached \(.*{message}.*\); going on without") as record:
        data = load_image_folder(image_folder)
    assert len([w for w in record if "not cached" in str(w.message)]) == 1
    assert data.identity == expected.identity and torch.equal(data.test_images, expected.test_images)


def test_corrupt_canonical_archive_is_rejected(canonical_cifar):
    batch = canonical_cifar / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(FileNotFoundError, match="set NORMLAB_DATA"):
        load_cifar10(canonical_cifar)


@pytest.mark.parametrize("name, damage", [("data_batch_3", "missing"), ("test_batch", "garbage"),
                                          ("batches.meta", "missing")])
def test_a_missing_or_garbage_archive_file_is_named_with_what_to_do(canonical_cifar, name, damage):
    path = canonical_cifar / "cifar-10-batches-py" / name
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b"garbage")
    said = "missing" if damage == "missing" else "damaged: not the archive's MD5 sum"
    with pytest.raises(FileNotFoundError, match=rf"archive .*cifar-10-batches-py is incomplete: {name} "
                                                rf"\({said}\)\. Extract cifar-10-python.tar.gz into "
                                                rf".* again, or .*--download.*set NORMLAB_DATA"):
        load_data(canonical_cifar)


def test_missing_data_says_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No CIFAR-10 found under .*set NORMLAB_DATA.*download"):
        load_data(tmp_path / "nowhere")


def test_corrupt_image_is_named(image_folder):
    bad = image_folder / "train" / "dog" / "0005.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Cannot decode image .*0005.png"):
        load_image_folder(image_folder)


@pytest.mark.parametrize("extension", ["png", "tif", "pgm"])
def test_16_bit_images_are_scaled_to_8_bits(image_folder, extension):
    """Each 16-bit value reads as its high byte (0x0180 -> 1, not 0x80 modulo 256)."""
    grey = torch.arange(32 * 32).reshape(32, 32) % 256
    path = image_folder / "train" / "cat" / "0003.png"
    path.unlink()
    Image.fromarray((grey * 256 + 0x80).numpy().astype(np.uint16)).save(path.with_suffix(f".{extension}"))
    data = load_image_folder(image_folder)
    expected = grey.to(torch.uint8).expand(3, 32, 32)
    assert sum(torch.equal(image, expected) for image in data.train_images) == 1


def test_bmp_tiff_and_ppm_images_are_decoded(image_folder, tmp_path):
    png = load_image_folder(image_folder)
    for extension, path in zip(["bmp", "tif", "tiff", "ppm"], (image_folder / "train").rglob("*.png")):
        Image.open(path).save(path.with_suffix(f".{extension}"))
        path.unlink()
    assert load_image_folder(image_folder).identity == png.identity


def test_a_file_that_is_no_image_lists_the_formats_read(image_folder):
    (image_folder / "train" / "dog" / "0005.png").unlink()
    (image_folder / "train" / "dog" / "0005.bmp").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Cannot decode image .*0005.bmp.*PNG, JPEG, WebP, BMP, "
                                         r"PPM/PGM and TIFF images: replace or remove"):
        load_image_folder(image_folder)


def png_header(width, height):
    """A PNG of ``width`` x ``height`` RGB pixels whose data stops after a few rows: what
    PIL's header reads, no decoder's image."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(3 * width * 4))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size, message", [(3000, r"has shape \(3, 3000, 3000\), expected \(3, 32, 32\)"),
                                           (30000, r"is far larger than 32 x 32")])
def test_a_huge_image_is_refused_from_its_header_without_decoding(image_folder, monkeypatch, size,
                                                                  message):
    path = image_folder / "train" / "airplane" / "0000.png"    # the first decoded
    if size == 3000:
        Image.new("RGB", (size, size)).save(path)
    else:
        path.write_bytes(png_header(size, size))    # 30000 x 30000: 2.7 GB decoded
    monkeypatch.setattr(torchvision.io, "decode_image", lambda *a, **k: pytest.fail("decoded"))
    monkeypatch.setattr(Image.Image, "load", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ValueError, match=rf"Image .*0000.png {message}"):
        load_image_folder(image_folder)


@pytest.mark.parametrize("copies", [1, 4])
def test_test_images_copied_into_the_training_split_are_refused_and_named(image_folder, copies):
    tests = sorted((image_folder / "test").rglob("*.png"))[:copies]
    for i, path in enumerate(tests):
        shutil.copy(path, image_folder / "train" / path.parent.name / f"copy{i}.png")
    shown = r"test/airplane/0000.png = train/airplane/copy0.png"
    which = "images under .* have the pixels of training images" if copies > 1 else (
        "image under .* has the pixels of a training image")
    with pytest.raises(ValueError, match=rf"{copies} test {which} \({shown}.*"
                                         rf"{', ...' if copies > 3 else ''}\): a model is not tested"):
        load_image_folder(image_folder)


def test_a_test_image_saved_again_in_another_format_in_training_is_found(image_folder):
    Image.open(image_folder / "test" / "cat" / "0003.png").save(image_folder / "train" / "cat" / "x.bmp")
    with pytest.raises(ValueError, match=r"test/cat/0003.png = train/cat/x.bmp"):
        load_image_folder(image_folder)


def test_channel_stats():
    images, _ = synthetic_images(20)
    mean, std = channel_stats(images)
    x = images.double() / 255
    torch.testing.assert_close(mean, x.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, x.std(dim=(0, 2, 3)).float())
    normalized = normalize(images, mean, std)
    torch.testing.assert_close(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 2 ** -5)])
def test_normalize_every_pixel_value_in_both_memory_formats(dtype, atol):
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    expected = (values.double() / 255 - mean.double()[:, None, None]) / std.double()[:, None, None]
    nchw = normalize(values.contiguous(), mean, std, dtype)
    nhwc = normalize(values.contiguous(memory_format=torch.channels_last), mean, std, dtype)
    assert nchw.dtype == nhwc.dtype == dtype
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, nhwc)                      # same arithmetic in either layout
    torch.testing.assert_close(nchw.double(), expected, rtol=0, atol=atol)


def view(padded_image, dy, dx, flip):
    """The 32 x 32 crop of ``padded_image`` at (dy, dx), mirrored if ``flip``."""
    crop = TF.crop(padded_image, dy, dx, 32, 32)
    return TF.horizontal_flip(crop) if flip else crop


#: normlab's padding modes and torchvision's names for them
TORCHVISION_PADDING = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


@pytest.mark.parametrize("mode", list(TORCHVISION_PADDING))
def test_augment_is_a_padded_crop_and_flip_of_each_image(mode):
    images, _ = synthetic_images(64)
    out = augment(images, padding=4, generator=torch.Generator().manual_seed(0), padding_mode=mode)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = TF.pad(images, [4], padding_mode=TORCHVISION_PADDING[mode])
    flips = 0
    for padded_image, result in zip(padded, out):
        candidates = {(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                      if torch.equal(result, view(padded_image, dy, dx, flip))}
        assert candidates, "an output is not a crop (and flip) of its padded input"
        flips += all(flip for _, _, flip in candidates)
    assert 16 < flips < 48  # about half are flipped


def test_augment_without_crop_only_flips_and_without_flip_only_crops():
    images, _ = synthetic_images(32)
    flipped = augment(images, padding=0, generator=torch.Generator().manual_seed(0))
    mirrored = [torch.equal(out, image.flip(-1)) for image, out in zip(images, flipped)]
    assert all(m or torch.equal(out, image) for m, out, image in zip(mirrored, flipped, images))
    assert 4 < sum(mirrored) < 28
    cropped = augment(images, padding=2, flip=False, generator=torch.Generator().manual_seed(0))
    padded = TF.pad(images, [2])
    assert all(any(torch.equal(out, TF.crop(p, dy, dx, 32, 32)) for dy in range(5) for dx in range(5))
               for p, out in zip(padded, cropped))


def test_reflect_padding_puts_no_black_border_on_a_bright_image():
    images = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    assert (augment(images, 4, generator=generator) == 0).any()
    assert torch.equal(augment(images, 4, generator=generator, padding_mode="reflect"), images)


def test_unknown_padding_mode_lists_the_valid_ones():
    images, _ = synthetic_images(2)
    with pytest.raises(ValueError, match="constant, reflect, replicate"):
        augment(images, padding=2, padding_mode="zeros")
    with pytest.raises(ValueError, match="crop_padding_mode"):
        Config(crop_padding_mode="mirror")


def test_augment_with_neither_crop_nor_flip_draws_nothing():
    images, _ = synthetic_images(4)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert augment(images, padding=0, flip=False, generator=generator) is images
    assert torch.equal(generator.get_state(), state)


def test_augment_is_repeatable_with_a_seed():
    images, _ = synthetic_images(8)
    a = augment(images, generator=torch.Generator().manual_seed(3))
    b = augment(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("config", [Config(), Config(crop_padding=3, crop_padding_mode="replicate",
                                                    flip=False)])
def test_the_training_pipeline_augments_as_its_config_says(config):
    images, labels = synthetic_images(16)
    data = CIFAR10(images, labels, images, labels, CLASSES, "synthetic")
    pipeline = Pipeline.for_config(config, data)
    x = pipeline.inputs(images, torch.Generator().manual_seed(0))
    augmented = augment(images, config.crop_padding, config.flip,
                        torch.Generator().manual_seed(0), config.crop_padding_mode)
    expected = normalize(augmented, pipeline.mean, pipeline.std, pipeline.dtype)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, expected)
    unaugmented = normalize(images, pipeline.mean, pipeline.std, pipeline.dtype)
    assert torch.equal(pipeline.inputs(images), unaugmented) and not torch.equal(x, unaugmented)


def test_describe_names_known_copies_and_subsets():
    from normlab.data import KNOWN_DATA, describe

    canonical = next(k for k, v in KNOWN_DATA.items() if v == "the canonical CIFAR-10 pixels")
    assert describe(canonical) == f"the canonical CIFAR-10 pixels ({canonical})"
    assert describe(f"{canonical}[:10000,:None]") == describe(canonical)
    assert describe("cifar10-0000000000000000") == "unknown data (cifar10-0000000000000000)"
