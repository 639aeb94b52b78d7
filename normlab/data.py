"""CIFAR-10 in memory: loading, channel statistics, batches with augmentation.

Data flows one way: files -> uint8 tensors (N, 3, 32, 32) held in memory -> per batch:
to the compute device, per-image random crop and flip on the whole batch, to float,
normalize -> model.

Two sources give the same :class:`CIFAR10`:

- the canonical archive (Krizhevsky 2009) through :class:`torchvision.datasets.CIFAR10`,
  which checks its MD5 sums and can download it: a folder holding
  ``cifar-10-batches-py``;
- an image folder, ``train/<class>/*`` and ``test/<class>/*`` as
  :class:`torchvision.datasets.ImageFolder` reads it (an offline copy such as the lossless
  PNG one): 32 x 32 images in any of :data:`IMAGE_FORMATS`, with 8 or 16 bits per channel,
  no test image among the training images. Decoding is cached on disk, where it can be.

Where the data comes from is one setting, :func:`resolve_data_root`: an explicit path,
else the environment variable ``NORMLAB_DATA``, else ``~/.cache/normlab/data``
(where the archive is downloaded when ``download=True``).

Both sources give the images in one order, stable-sorted by label (the original order
within a class: an image folder's ``NNNN`` file names are that rank), and the same
identity (:func:`content_identity`), a hash of the pixels, labels and class names: the
same images find the same results whatever form they came in, and any changed pixel
gives another identity.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.datasets.utils import check_integrity
from torchvision.transforms.v2.functional import to_dtype

from .store import CACHE_ENV, atomic_save, cache_dir

DATA_ENV = "NORMLAB_DATA"


@dataclass
class CIFAR10:
    """CIFAR-10 held in memory.

    Attributes:
        train_images: uint8 (50000, 3, 32, 32).
        train_labels: int64 (50000,).
        test_images: uint8 (10000, 3, 32, 32).
        test_labels: int64 (10000,).
        classes: the 10 class names, in label order.
        identity: ``cifar10-<hash>`` of the content (:func:`content_identity`); a subset
            adds its sizes.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    identity: str

    def subset(self, train: int | None = None, test: int | None = None) -> CIFAR10:
        """The first ``train`` training and ``test`` test images after a fixed shuffle
        (seed 0), so that every class appears; ``None`` keeps a split whole (both ``None``:
        this data, its identity unchanged)."""
        if train is None and test is None:
            return self

        def take(images, labels, n):
            if n is None or n >= len(labels):
                return images, labels
            index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n]
            return images[index], labels[index]

        train_images, train_labels = take(self.train_images, self.train_labels, train)
        test_images, test_labels = take(self.test_images, self.test_labels, test)
        return CIFAR10(train_images, train_labels, test_images, test_labels, self.classes,
                       f"{self.identity}[:{train},:{test}]")


def canonical_order(images: torch.Tensor, labels: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) and int64 labels (N,) stable-sorted by label: the order
    every source gives (an image folder's files are already in it)."""
    order = torch.sort(labels, stable=True).indices
    return images[order].contiguous(), labels[order]


def content_identity(train_images: torch.Tensor, train_labels: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor,
                     classes: list[str]) -> str:
    """``cifar10-`` and 16 hex digits of the SHA-256 of the class names and, per split, the
    int64 labels and the uint8 pixels, as held (in :func:`canonical_order`)."""
    digest = hashlib.sha256(json.dumps(list(classes)).encode())
    for tensor in (train_labels, train_images, test_labels, test_images):
        digest.update(tensor.contiguous().numpy())
    return f"cifar10-{digest.hexdigest()[:16]}"


#: Content identities (:func:`content_identity`) of the copies of CIFAR-10 this book has
#: met, and what each is (``../shared/data/README.md`` beside the repository).
KNOWN_DATA = {
    "cifar10-04c544eb176e291d": "the canonical CIFAR-10 pixels",
    "cifar10-f89cbf36aae63aa2": "a JPEG re-encoded copy of CIFAR-10 at quality about 75",
}


def describe(identity: str) -> str:
    """What the data of ``identity`` (or of a subset of it) is, with the whole data's
    identity: ``"the canonical CIFAR-10 pixels (cifar10-04c544eb176e291d)"``, or
    ``"unknown data (cifar10-...)"`` for a copy :data:`KNOWN_DATA` does not list."""
    whole = identity.split("[")[0]
    return f"{KNOWN_DATA.get(whole, 'unknown data')} ({whole})"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$NORMLAB_DATA``, else
    ``~/.cache/normlab/data``."""
    root = root or os.environ.get(DATA_ENV) or Path.home() / ".cache" / "normlab" / "data"
    return Path(root).expanduser()


def _missing_data_message(root: Path) -> str:
    return (
        f"No CIFAR-10 found under {root}: set {DATA_ENV} (or --data, or the root argument) to a "
        f"folder holding cifar-10-batches-py (the canonical archive, extracted) or train/ "
        f"and test/ class folders, or allow the download (download=True, --download)."
    )


def load_data(root: str | os.PathLike | None = None, download: bool = False) -> CIFAR10:
    """Load CIFAR-10 from the folder :func:`resolve_data_root` names.

    A folder with ``train/`` or ``test/`` is read as an image folder; otherwise the
    canonical archive is read (and downloaded first when ``download`` is true).

    Raises:
        FileNotFoundError: no data there and no download allowed (or possible); the
            message says what to set.
    """
    root = resolve_data_root(root)
    if (root / "train").is_dir() or (root / "test").is_dir():
        return load_image_folder(root)
    return load_cifar10(root, download=download)


def load_cifar10(root: str | os.PathLike, download: bool = False) -> CIFAR10:
    """The canonical CIFAR-10 archive through :class:`torchvision.datasets.CIFAR10`.

    ``root`` holds (or receives, with ``download=True``) ``cifar-10-batches-py``;
    torchvision verifies the MD5 sum of every batch file.

    Raises:
        FileNotFoundError: the archive is missing or corrupt and cannot be downloaded; the
            message names each missing or damaged file (:func:`_archive_damage`).
    """
    root = Path(root).expanduser()
    splits = {}
    try:
        for train in (True, False):
            ds = torchvision.datasets.CIFAR10(root, train=train, download=download)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
            splits[train] = canonical_order(images, torch.tensor(ds.targets, dtype=torch.int64))
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        if damaged := _archive_damage(root):
            folder = root / torchvision.datasets.CIFAR10.base_folder
            raise FileNotFoundError(
                f"The CIFAR-10 archive {folder} is incomplete: {', '.join(damaged)}. Extract "
                f"cifar-10-python.tar.gz into {root} again, or remove {folder.name} and allow the "
                f"download (download=True, --download), or set {DATA_ENV} to an intact copy."
            ) from error
        raise FileNotFoundError(f"{_missing_data_message(root)} ({error})") from error
    except OSError as error:  # download attempted without a network
        raise FileNotFoundError(
            f"{_missing_data_message(root)} The download failed: {error}") from error
    tensors = (*splits[True], *splits[False], list(ds.classes))
    return CIFAR10(*tensors, content_identity(*tensors))


def _archive_damage(root: Path) -> list[str]:
    """The files of ``root/cifar-10-batches-py`` (where that folder exists) that are missing
    or do not match the MD5 sum torchvision lists for them, as ``"data_batch_3 (missing)"``
    or ``"test_batch (damaged: not the archive's MD5 sum)"``."""
    cls = torchvision.datasets.CIFAR10
    folder = root / cls.base_folder
    if not folder.is_dir():
        return []
    damage = []
    for name, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        if not (folder / name).is_file():
            damage.append(f"{name} (missing)")
        elif not check_integrity(str(folder / name), md5):
            damage.append(f"{name} (damaged: not the archive's MD5 sum)")
    return damage


#: CIFAR-10's classes: an image folder must hold exactly this many class folders per split.
NUM_CLASSES = 10


def _folder_samples(folder: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, label) of every image under ``folder/<class>/``, and the class names.

    Raises:
        FileNotFoundError: no class folders, or one without images.
        ValueError: not 10 class folders, or a link to a folder inside one (a loop would
            read its images again and again).
    """
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"No class folders in {folder}. {_missing_data_message(folder.parent)}")
    if len(classes) != NUM_CLASSES:
        raise ValueError(f"{folder} holds {len(classes)} class folders ({', '.join(classes)}); "
                         f"CIFAR-10 has {NUM_CLASSES}: remove the others.")
    for name in classes:
        for directory, subfolders, _ in os.walk(folder / name):
            for sub in subfolders:
                if (Path(directory) / sub).is_symlink():
                    raise ValueError(f"{Path(directory) / sub} is a link to a folder inside a "
                                     f"class folder: a class folder holds images; remove it.")
        if not any(Path(path).suffix.lower() in IMG_EXTENSIONS
                   for path in (folder / name).rglob("*")):
            raise FileNotFoundError(f"{folder.name}/{name} under {folder.parent} holds no "
                                    f"image: every class of CIFAR-10 needs its images.")
    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)},
                           extensions=IMG_EXTENSIONS)
    return samples, classes


def _read_bytes(path: str) -> bytes:
    """The bytes of the file at ``path``, read with :func:`os.read` in reads of 1 MiB
    (a third faster than ``open().read()`` for CIFAR-10's 60,000 small files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


#: What the decoded-data cache holds, in its key: a change of decoding changes it.
CACHE_FORMAT = "imagefolder-3"


def _fingerprint(root: Path, samples: dict[str, list[tuple[str, int]]]) -> str:
    """16 hex digits of the SHA-256 of :data:`CACHE_FORMAT`, the resolved ``root`` and every
    file's name, label and bytes (each file's own SHA-256): what the decoded-data cache is
    keyed by, so that another folder, or a file edited to the same size and modification
    time, is decoded again. About 0.5 s for CIFAR-10 (131 MB) once the files are in the
    operating system's cache."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{root.resolve()}\n".encode())
    for split, items in samples.items():
        start = len(str(root / split)) + 1   # the name below it; pathlib took 3x as long
        for path, label in items:
            digest.update(f"{split}/{path[start:]}:{label}:".encode())
            digest.update(hashlib.sha256(_read_bytes(path)).digest())
    return digest.hexdigest()[:16]


#: The formats an image folder's files may have (what the extension filter,
#: torchvision's ``IMG_EXTENSIONS``, lets through).
IMAGE_FORMATS = "PNG, JPEG, WebP, BMP, PPM/PGM and TIFF"
#: Formats (as PIL names them) that :func:`torchvision.io.decode_image` decodes: the pixels
#: the identities of :data:`KNOWN_DATA` were made with. PIL decodes the others.
TORCHVISION_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


def _header(path: str, data: bytes) -> Image.Image:
    """The image ``data`` (the file at ``path``) opened by PIL, which reads only its header
    (size, mode, format), so that a huge image is refused before it is decoded.

    Raises:
        ValueError: not an image PIL reads, or larger than 32 x 32; the message names it.
    """
    try:
        with warnings.catch_warnings():   # a large image is refused just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ValueError(f"Image {path} is far larger than 32 x 32 ({error}): is this folder "
                         f"CIFAR-10?") from error
    except OSError as error:   # PIL.UnidentifiedImageError, a truncated header
        raise ValueError(_undecodable(path, error)) from error
    width, height = image.size
    if (height, width) != (32, 32):
        raise ValueError(f"Image {path} has shape (3, {height}, {width}), expected "
                         f"(3, 32, 32): is this folder CIFAR-10?")
    return image


def _undecodable(path: str, error: Exception) -> str:
    return (f"Cannot decode image {path}: {error}. An image folder's files are "
            f"{IMAGE_FORMATS} images: replace or remove the file, or point {DATA_ENV} at an "
            f"intact copy.")


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """uint8 or uint16 (3, H, W) -> uint8, 16-bit values scaled to 8 (their high byte:
    0x0180 -> 1), as :func:`torchvision.transforms.v2.functional.to_dtype` scales."""
    return to_dtype(image, torch.uint8, scale=True)


def _decode_pil(path: str, image: Image.Image) -> torch.Tensor:
    """uint8 (3, H, W) of an image PIL has opened: 16-bit grey (``I;16``; the ``I`` of a
    16-bit PGM) scaled to 8 bits, anything else converted to RGB by PIL.

    Raises:
        ValueError: 32-bit integer or floating-point pixels (modes ``I``, ``F``).
    """
    try:
        if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PPM"):
            grey = torch.from_numpy(np.asarray(image, dtype=np.uint16).copy())
            return _to_uint8(grey).expand(3, -1, -1).contiguous()
        if image.mode in ("I", "F"):
            raise ValueError(f"Image {path} has {image.mode!r} pixels (32-bit integers or "
                             f"floats), which have no one 8-bit reading: save it with 8 or "
                             f"16 bits per channel.")
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    except OSError as error:   # a damaged body behind a good header
        raise ValueError(_undecodable(path, error)) from error


def _decode_file(path: str) -> torch.Tensor:
    """uint8 (3, 32, 32) of the image file at ``path`` (any of :data:`IMAGE_FORMATS`; 16 bits
    per channel scaled to 8), its size read from the header before it is decoded.

    Raises:
        ValueError: not decodable, or not 32 x 32; the message names the file.
    """
    data = _read_bytes(path)
    header = _header(path, data)
    if header.format not in TORCHVISION_FORMATS:
        return _decode_pil(path, header)
    try:
        image = torchvision.io.decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                            mode=torchvision.io.ImageReadMode.RGB)
    except RuntimeError as error:
        raise ValueError(_undecodable(path, error)) from error
    return _to_uint8(image)


def _decode(samples: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) of ``samples`` (path, label)."""
    images = torch.empty(len(samples), 3, 32, 32, dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        images[i] = _decode_file(path)
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _copies(train: torch.Tensor, test: torch.Tensor) -> list[tuple[int, int]]:
    """(test index, training index) of every test image whose pixels, uint8 (3, H, W), a
    training image has: found by the SHA-256 of each image's pixels (0.3 s for CIFAR-10)."""
    def digests(images):
        pixels = memoryview(images.contiguous().numpy().reshape(-1))
        size = images.shape[1:].numel()
        return [hashlib.sha256(pixels[i * size:(i + 1) * size]).digest() for i in range(len(images))]

    train_index = {digest: i for i, digest in enumerate(digests(train))}
    return [(i, train_index[digest]) for i, digest in enumerate(digests(test))
            if digest in train_index]


def _check_disjoint(root: Path, samples: dict[str, list[tuple[str, int]]],
                    train_images: torch.Tensor, test_images: torch.Tensor) -> None:
    """Raise ValueError, naming up to three, if test images (``samples["test"]``, decoded as
    ``test_images``) are copies of training images, byte for byte or in pixels: a model
    is not tested by images it trained on."""
    copies = _copies(train_images, test_images)
    if copies:
        start = len(str(root)) + 1

        def name(split, i):
            return samples[split][i][0][start:]

        shown = ", ".join(f"{name('test', i)} = {name('train', j)}" for i, j in copies[:3])
        have = ("test images under {} have the pixels of training images" if len(copies) > 1
                else "test image under {} has the pixels of a training image").format(root)
        raise ValueError(f"{len(copies)} {have} ({shown}"
                         f"{', ...' if len(copies) > 3 else ''}): a model is not tested by "
                         f"images it trained on; remove the copies from test/ or train/.")


def load_image_folder(root: str | os.PathLike) -> CIFAR10:
    """CIFAR-10 from ``root/train/<class>/*`` and ``root/test/<class>/*``.

    Class names are the folder names in sorted order (as ImageFolder assigns labels);
    within a class, the files in name order. The decoded tensors and their identity are
    cached under ``~/.cache/normlab`` (``$NORMLAB_CACHE``), keyed by the folder and the
    files' names and bytes (:func:`_fingerprint`), so a second load takes about a second; a
    cache file that does not load is rebuilt, with a warning. The cache is optional: where
    it cannot be made or written (a file named as its folder, a full or read-only disk),
    a warning says so and the images are decoded on every load.

    Raises:
        FileNotFoundError: ``train/`` or ``test/`` is missing, or a class folder is empty
            (the message names it).
        ValueError: not 10 class folders, a link to a folder inside one, a file that cannot
            be decoded (not one of :data:`IMAGE_FORMATS`) or is not 32x32 (read from its
            header: a huge image is not decoded); test images that a training image
            has the pixels of (:func:`_check_disjoint`).
    """
    root = Path(root).expanduser()
    samples, classes = {}, None
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"There is no {split}/ folder under {root}: CIFAR-10 as an "
                                    f"image folder has train/ and test/, each with a folder "
                                    f"per class. {_missing_data_message(root)}")
        samples[split], split_classes = _folder_samples(root / split)
        if classes is not None and split_classes != classes:
            raise ValueError(f"train/ and test/ under {root} hold different class folders: "
                             f"{classes} vs {split_classes}.")
        classes = split_classes
    cached = _cache_file(_fingerprint(root, samples))
    tensors = _read_cache(cached) if cached else None
    if tensors is None:
        tensors = {split: _decode(items) for split, items in samples.items()}
        _check_disjoint(root, samples, tensors["train"][0], tensors["test"][0])
        tensors["identity"] = content_identity(*tensors["train"], *tensors["test"], classes)
        if cached:
            _write_cache(tensors, cached)
    return CIFAR10(*tensors["train"], *tensors["test"], classes, tensors["identity"])


def _cache_file(key: str) -> Path | None:
    """The decoded-data cache file of ``key`` (:func:`_fingerprint`), or None, with a
    warning, where the cache folder cannot be made (a file in its place, no permission):
    the cache is optional."""
    try:
        return cache_dir() / f"imagefolder-{key}.pt"
    except OSError as error:
        _uncached(error)
        return None


def _write_cache(tensors: dict, path: Path) -> None:
    """Cache ``tensors`` at ``path``, or warn where it cannot be written (a full disk, a
    read-only one) and go on."""
    try:
        atomic_save(tensors, path)
    except OSError as error:
        _uncached(error)


def _uncached(error: OSError) -> None:
    warnings.warn(f"The decoded images are not cached ({error}); going on without: the next "
                  f"load decodes them again. Set {CACHE_ENV} to a folder with space that you "
                  f"can write to.", stacklevel=4)


def _read_cache(path: Path) -> dict | None:
    """The decoded data cached at ``path``, or None where there is none or it does not
    load (truncated, not a tensor file): that file is then removed, with a warning."""
    if not path.exists():
        return None
    try:
        tensors = torch.load(path, weights_only=True)
        if not {"train", "test", "identity"} <= set(tensors):
            raise ValueError("it lacks the train, test or identity entry")
    except Exception as error:  # torch raises many kinds for a damaged file
        warnings.warn(f"The decoded-data cache {path} does not load ({type(error).__name__});"
                      f" decoding the images again.", stacklevel=3)
        try:
            path.unlink(missing_ok=True)
        except OSError:   # a read-only cache: it is written again, or not, after decoding
            pass
        return None
    return tensors


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images (N, 3, H, W), as fractions
    of 255 (so CIFAR-10's training split gives about (0.49, 0.48, 0.45) and
    (0.25, 0.24, 0.26)). Returns two float32 tensors of shape (3,)."""
    x = images.float().div_(255)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


#: Ways of filling the border of a padded image before a random crop (as ``torch.nn.functional.pad``
#: names them): zeros, the image mirrored at its edge, the edge pixel repeated.
PADDING_MODES = ("constant", "reflect", "replicate")


def check_padding_mode(padding_mode: str, argument: str = "padding_mode") -> None:
    """Raise ValueError, naming ``argument`` and listing :data:`PADDING_MODES`, for any
    other ``padding_mode``."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"Unknown value {padding_mode!r} for argument {argument}. "
                         f"Valid values are {', '.join(PADDING_MODES)}.")


def augment(images: torch.Tensor, padding: int = 4, flip: bool = True,
            generator: torch.Generator | None = None,
            padding_mode: str = "constant") -> torch.Tensor:
    """Random crop of a padded image and random horizontal flip, per image, on a batch.

    Each image (N, C, H, W) is padded by ``padding`` pixels (0: no crop) on every side, an
    H x W window is cut at a random offset in [0, 2 * padding] and, with ``flip``, flipped
    left-right with probability 1/2: what torchvision's ``RandomCrop(32, padding=4,
    padding_mode=...)`` and ``RandomHorizontalFlip()`` do image by image, done here for the
    whole batch with one gather. ``padding_mode`` is one of :data:`PADDING_MODES`:
    ``constant`` fills the border with zeros (black), ``reflect`` mirrors the image at its
    edge (without repeating the edge pixel), ``replicate`` repeats the edge pixel.
    Works on any dtype and device; returns a tensor of the same shape, dtype and device.
    With neither crop nor flip it returns ``images`` and draws no random numbers.

    Raises:
        ValueError: an unknown ``padding_mode``.
        RuntimeError: ``padding_mode="reflect"`` with ``padding`` not smaller than H and W.
    """
    check_padding_mode(padding_mode)
    if padding == 0 and not flip:
        return images
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4, mode=padding_mode)         # (N, C, H+2p, W+2p)
    # random numbers come from the (CPU) generator, so a seed fixes them on any device
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator).to(device)
    flips = torch.rand(n, 1, generator=generator) < 0.5 if flip else torch.zeros(n, 1, dtype=bool)
    cols = torch.arange(w, device=device)
    cols = torch.where(flips.to(device), w - 1 - cols, cols) + dx     # (N, W)
    rows = torch.arange(h, device=device) + dy                        # (N, H)
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)                                    # channels_last strides


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> ``dtype`` tensor ``(x / 255 - mean) / std``, with
    ``mean`` and ``std`` (3,) as fractions of 255 (from :func:`channel_stats`). Keeps the
    memory format of the input (channels_last or contiguous).

    Computed as ``x * scale + shift`` in ``dtype``, with the per-channel ``scale`` and
    ``shift`` spelled out to one image's shape (1, 3, H, W) in the input's memory format:
    broadcast from (3, 1, 1) onto channels_last input, whose innermost dimension is the 3
    channels, the product runs element by element and takes about 8 times longer.
    """
    _, c, h, w = images.shape
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def per_pixel(values: torch.Tensor) -> torch.Tensor:
        values = values.to(images.device, dtype)[:, None, None].expand(1, c, h, w)
        return values.contiguous(memory_format=memory_format)

    return images.to(dtype) * per_pixel(1 / (255 * std)) + per_pixel(-mean / std)


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
            shuffle: bool = False, generator: torch.Generator | None = None):
    """Yield (images, labels) slices of ``batch_size`` (the last may be shorter), in a
    random order (``torch.randperm``) when ``shuffle``. Images stay uint8."""
    n = len(labels)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield images[start:start + batch_size], labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield images[index], labels[index]
