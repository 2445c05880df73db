"""Data: CIFAR-10 through torchvision, and the embedded photo set built from the photographs
scikit-image and scikit-learn ship (the default when CIFAR-10 is absent, and in CI).

Images are float tensors (C, H, W) in [0, 1]. Every split is fixed: the photo set is split by
photograph, CIFAR-10's training set is split 45k/5k into train/val by a seeded permutation, and
test is only for the final report.
"""
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skimage_data
from sklearn.datasets import load_sample_image
from torch.utils.data import Dataset, Subset

from ginr_common._io import atomic_write
from ginr_common.inputs import as_image, as_unit_range

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

# Split by photograph: no photograph feeds two splits (the stereo pair is one photograph). Training
# takes natural photographs only: scikit-image's colour ones, scikit-learn's two sample images
# (china, flower) and scikit-image's grayscale photographs as three equal channels. The
# validation photograph (a cat indoors) is, like the test photographs (a portrait, a motorcycle
# scene), a natural colour photograph of objects; the test photographs are never trained on or
# used for model selection.
PHOTO_SPLITS = {
    "train": ["coffee", "rocket", "china", "flower", "camera", "moon", "brick", "grass", "gravel", "clock", "coins"],
    "val": ["chelsea"],
    "test": ["astronaut", "stereo_motorcycle"],
}
SKLEARN_PHOTOS = {"china": "china.jpg", "flower": "flower.jpg"}
TILE, TILE_SCALES, TILE_STRIDE = 32, (2, 4, 8), 24   # 32x32 tiles of the photo downsampled 2x, 4x, 8x
HR_SIZE, HR_SCALE = 128, 4                            # 128x128 crops at full resolution, LR = 32x32
HR_TRAIN_STRIDE, HR_TRAIN_SCALES = 32, (1, 2)          # more HR training crops: overlapping, photo at 1x and 1/2x
PHOTO_VERSION = 3


def _photographs(name):
    """The photograph(s) called ``name`` (scikit-learn's sample images, else skimage.data) as float
    (3, H, W) tensors in [0, 1]; grayscale photographs become three equal channels."""
    if name in SKLEARN_PHOTOS:
        imgs = [load_sample_image(SKLEARN_PHOTOS[name])]
    else:
        imgs = getattr(skimage_data, name)()
        imgs = list(imgs[:2]) if name == "stereo_motorcycle" else [imgs]
    imgs = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im[..., :3] for im in imgs]
    return [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in imgs]


def resize(x, size):
    """Antialiased bicubic resize of (B, C, H, W), clamped to [0, 1]."""
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _tiles(img, size, stride):
    """All size x size tiles of (C, H, W) at the given stride, (n, C, size, size)."""
    t = img.unfold(1, size, stride).unfold(2, size, stride)  # C, nh, nw, size, size
    return t.permute(1, 2, 0, 3, 4).reshape(-1, img.shape[0], size, size)


def build_photo_set(names, train=False):
    """32x32 tiles at several scales, and (HR 128x128, LR 32x32) pairs, from the named photos.
    Evaluation splits take non-overlapping HR crops of the full-resolution photo; the training
    split (``train``) overlapping ones of the photo at full and half resolution."""
    return build_image_set([img for name in names for img in _photographs(name)], train)


def build_image_set(images, train=False, tile=TILE, scales=TILE_SCALES, stride=TILE_STRIDE):
    """Tiles of ``tile`` pixels of each image (C, H, W) downsampled by each of ``scales`` (where it
    is still at least a tile: every 2 x tile / 32 ... ), overlapping by tile - stride, and (HR, LR)
    pairs: HR crops of ``HR_SCALE`` x tile pixels and their antialiased downsamples to the tile size
    (evaluation splits: non-overlapping crops of the image; ``train``: overlapping ones of the image
    at full and half resolution). uint8 tensors {"tiles", "hr", "lr"}, the HR ones possibly empty."""
    tiles, hr, big = [], [], tile * HR_SCALE
    for img in images:
        H, W = img.shape[1:]
        for s in scales:
            if min(H // s, W // s) >= tile:
                small = img if s == 1 else resize(img[None], (H // s, W // s))[0]
                tiles.append(_tiles(small, tile, stride * tile // TILE))
        for s in HR_TRAIN_SCALES if train else (1,):
            if min(H // s, W // s) >= big:
                src = img if s == 1 else resize(img[None], (H // s, W // s))[0]
                hr.append(_tiles(src, big, HR_TRAIN_STRIDE * tile // TILE if train else big))
    C = images[0].shape[0]
    hr = torch.cat(hr) if hr else torch.zeros(0, C, big, big)
    lr = resize(hr, (tile,) * 2) if len(hr) else torch.zeros(0, C, tile, tile)
    q = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731  stored as 8-bit images
    return dict(tiles=q(torch.cat(tiles)) if tiles else torch.zeros(0, C, tile, tile, dtype=torch.uint8),
                hr=q(hr), lr=q(lr))


def load_photos(root=DATA_DIR, progress=True):
    """The embedded photo set, built deterministically on first use and cached under ``root``.
    Returns {split: {"tiles", "hr", "lr"}} of uint8 tensors."""
    path = Path(root) / f"photos_v{PHOTO_VERSION}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    if progress:
        print(f"building the embedded photo set from scikit-image's and scikit-learn's photographs -> {path}")
    sets = {split: build_photo_set(names, train=split == "train") for split, names in PHOTO_SPLITS.items()}
    atomic_write(path, lambda f: torch.save(sets, f))
    return sets


def photo_fingerprint(sets):
    """sha256 of the photo set's bytes (to check the build is deterministic)."""
    h = hashlib.sha256()
    for split in sorted(sets):
        for k in sorted(sets[split]):
            h.update(sets[split][k].numpy().tobytes())
    return h.hexdigest()


class ImageTensorDataset(Dataset):
    """uint8 (N, C, H, W) -> float images in [0, 1]; items are (image, 0)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255, 0


# ----------------------------------------------------------------------------- CIFAR-10
CIFAR_HELP = ("CIFAR-10 is not in {root} and could not be downloaded ({err}). Download "
              "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and put it "
              "(or its extracted folder cifar-10-batches-py/) in {root}.")


def _cifar(root, train):
    import torchvision
    from torchvision import transforms

    class CIFAR10(torchvision.datasets.CIFAR10):
        """torchvision's reader without the md5 checks, so any well-formed archive loads."""

        def _check_integrity(self):
            return all((Path(self.root) / self.base_folder / f).exists()
                       for f, _ in self.train_list + self.test_list)

        def _load_meta(self):
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10(root, train=train, transform=transforms.ToTensor(), download=False)


def load_cifar10(root=DATA_DIR, download=True, val_size=5000, seed=0):
    """{"train", "val", "test"} datasets of (image, label); val is carved from the training set."""
    root = Path(root)
    folder, archive = root / "cifar-10-batches-py", root / "cifar-10-python.tar.gz"
    if not folder.exists() and archive.exists():
        with tarfile.open(archive) as tf:
            tf.extractall(root, filter="data")
    if not folder.exists():
        err = "download disabled"
        if download:
            try:
                import torchvision

                torchvision.datasets.CIFAR10(root, train=True, download=True)
                err = None
            except Exception as e:  # no network, blocked host, ...
                err = f"{type(e).__name__}: {e}"
        if err is not None:
            raise FileNotFoundError(CIFAR_HELP.format(root=root, err=err))
    train_full, test = _cifar(root, True), _cifar(root, False)
    n = len(train_full)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in (0, {n}), got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return {"train": Subset(train_full, perm[val_size:]), "val": Subset(train_full, perm[:val_size]),
            "test": test}


def load_dataset(name="photos", root=DATA_DIR, size=(TILE, TILE), channels=3):
    """{"train", "val", "test"} image datasets for ``photos``, ``cifar10`` or a folder of images
    (``load_folder``: tiles of ``size`` with ``channels`` channels); photos and folders also give
    "train_hr" (HR training crops, 4x the tile) and "val_sr" / "test_sr" ((lr, hr) pairs) for
    super-resolution."""
    if name == "cifar10":
        return load_cifar10(root)
    if name == "photos":
        sets = load_photos(root)
    elif Path(name).is_dir():
        sets = load_folder(name, size, channels)
    else:
        raise ValueError(f"data must be 'photos', 'cifar10' or a folder of images, got {name!r}")
    out = {k: ImageTensorDataset(v["tiles"]) for k, v in sets.items()}
    out["train_hr"] = ImageTensorDataset(sets["train"]["hr"])
    out["val_sr"], out["test_sr"] = ((sets[s]["lr"].float() / 255, sets[s]["hr"].float() / 255) for s in ("val", "test"))
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy", ".npz")


def read_image(path, channels=3):
    """One image file as a float tensor (channels, H, W) in [0, 1]: PNG, JPEG, TIFF or BMP (through
    PIL), or a NumPy array (.npy, or the first array of an .npz) shaped (H, W) or (C, H, W), uint8
    (16-bit images: 0..65535) or floats in [0, 1]. Channels as ``inputs.as_image`` converts them
    (RGBA loses its alpha channel, grayscale is repeated to ``channels``). ValueError naming the
    file when it cannot be read or holds something else."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".npy", ".npz"):
            arr = np.load(path)
            arr = arr[arr.files[0]] if isinstance(arr, np.lib.npyio.NpzFile) else arr
            x = torch.from_numpy(np.array(arr))      # channels first, as the array is stored
        else:
            from PIL import Image   # PIL is matplotlib's and scikit-image's dependency too

            with Image.open(path) as im:
                arr = np.array(im if im.mode in ("L", "RGB", "RGBA", "I;16", "I", "F") else im.convert("RGB"))
            x = torch.from_numpy(arr if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if x.dtype in (torch.uint16, torch.int32) and x.dim() <= 3:
        x = x.float() / 65535                       # 16-bit images
    return as_unit_range(as_image(x, channels, name=str(path)), str(path), torch.float32)


def folder_splits(folder):
    """{split: [files]} of an image folder: its train/, val/ and test/ subfolders when it has them,
    else every image file in it, split by file name (a hash of the name: about 80/10/10, each split
    given at least one file when there are three or more)."""
    folder = Path(folder)
    files = lambda d: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())  # noqa: E731
    if (folder / "train").is_dir():
        splits = {s: files(folder / s) if (folder / s).is_dir() else [] for s in ("train", "val", "test")}
    else:
        splits = {"train": [], "val": [], "test": []}
        for p in files(folder):
            b = int(hashlib.sha256(p.name.encode()).hexdigest(), 16) % 10
            splits["test" if b == 0 else "val" if b == 1 else "train"].append(p)
        for s in ("val", "test"):
            if not splits[s] and len(splits["train"]) > 1:
                splits[s].append(splits["train"].pop())
    for s, fs in splits.items():
        if not fs:
            raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) for the {s} split; give it at "
                             "least three images, or train/, val/ and test/ subfolders with images in each")
    return splits


def folder_identity(name):
    """For a folder of images (``name`` not photos or cifar10): {"files": how many, "files_sha256": a hash
    of every file's split, name and bytes}, which a resume compares, so a changed folder is never
    silently continued. {} for the other data."""
    if name in ("photos", "cifar10") or not Path(name).is_dir():
        return {}
    h, n = hashlib.sha256(), 0
    for split, files in folder_splits(name).items():
        for p in files:
            h.update(f"{split}/{p.name}".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
            n += 1
    return {"files": n, "files_sha256": h.hexdigest()}


def load_folder(folder, size=(TILE, TILE), channels=3, progress=True):
    """An image folder as the photo set's splits: {split: {"tiles", "hr", "lr"}} uint8 tensors of tiles
    of ``size`` (every image at full, half, quarter and eighth resolution while still a tile) and HR
    crops of 4 x size with their downsamples (see ``build_image_set``), from ``folder_splits``. Images
    smaller than a tile are skipped (their count and names printed); a split left without any is an
    error naming them."""
    size = tuple(size)
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"image folders give square 2-D tiles: model.input_size must be [S, S], got {list(size)}")
    splits = folder_splits(folder)
    out = {}
    for split, files in splits.items():
        images = [read_image(p, channels) for p in files]
        small = [p.name for p, x in zip(files, images) if min(x.shape[1:]) < size[0]]
        if len(small) == len(files):
            raise ValueError(f"{folder}: every {split} image is smaller than the model's input size "
                             f"{size[0]}x{size[0]}: {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}")
        kept = [x for x in images if min(x.shape[1:]) >= size[0]]
        out[split] = build_image_set(kept, train=split == "train", tile=size[0], scales=(1, 2, 4, 8), stride=TILE_STRIDE)
        out[split]["files"] = [p.name for p, x in zip(files, images) if min(x.shape[1:]) >= size[0]]
        if progress:
            print(f"{folder}: {split} {len(files)} file(s) -> {len(out[split]['tiles'])} tiles of {size[0]}x{size[0]}, "
                  f"{len(out[split]['hr'])} HR crops" + (f"; {len(small)} smaller than a tile skipped ("
                                                          f"{', '.join(small[:3])}{' ...' if len(small) > 3 else ''})"
                                                          if small else ""))
    return out


def augment(images, generator):
    """Random symmetries of a square batch (B, C, S, S): one of the 8 flips/rotations and one of
    the C! channel orders per image, drawn from ``generator`` (so a step's batch is reproducible)."""
    B, C = images.shape[:2]
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"augment expects square images (B, C, S, S), got {tuple(images.shape)}")
    k = torch.randint(0, 4, (B,), generator=generator).tolist()
    flip = torch.randint(0, 2, (B,), generator=generator).tolist()
    perms = [torch.randperm(C, generator=generator) for _ in range(B)]
    out = [torch.rot90(x, r, (-2, -1)) for x, r in zip(images, k)]
    out = [x.flip(-1) if f else x for x, f in zip(out, flip)]
    return torch.stack([x[p] for x, p in zip(out, perms)])


def sparse_masks(ids, num_pixels, frac=0.2, seed=42):
    """The observed pixel indices (n, k) of the images ``ids``, k = round(frac * num_pixels), each
    row sorted. Image i's mask comes from a generator seeded with (seed, i): deterministic and
    specific to the image, whatever the batch."""
    k = round(frac * num_pixels)
    if not 0 < k < num_pixels:
        raise ValueError(f"frac={frac} observes {k} of {num_pixels} pixels: it must observe some and not all")
    return torch.stack([torch.randperm(num_pixels, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))[:k]
                        .sort().values for i in ids])


def dataset_identity(dataset, name, split):
    """What a run trained on: {name, split, n (images), sha256 of the images' content}. A resume
    compares it with the checkpoint's, so a changed data set is never silently continued."""
    h = hashlib.sha256()
    images = getattr(dataset, "images", None)
    base = getattr(dataset, "dataset", None)
    if torch.is_tensor(images):
        h.update(images.contiguous().numpy().tobytes())
    elif isinstance(dataset, Subset) and hasattr(base, "data"):
        h.update(np.ascontiguousarray(base.data).tobytes())
        h.update(np.asarray(dataset.indices, dtype=np.int64).tobytes())
    else:
        for i in range(len(dataset)):
            h.update(dataset[i][0].contiguous().numpy().tobytes())
    return {"name": name, "split": split, "n": len(dataset), "sha256": h.hexdigest()}


def load_sr_pairs(split="test", root=DATA_DIR):
    """(lr (N, 3, 32, 32), hr (N, 3, 128, 128)) float pairs from the embedded photos."""
    s = load_photos(root)[split]
    return s["lr"].float() / 255, s["hr"].float() / 255


__all__ = ["augment", "dataset_identity", "folder_identity", "folder_splits", "load_folder", "read_image", "resize", "sparse_masks",
           "load_dataset", "load_photos", "load_cifar10", "load_sr_pairs", "PHOTO_SPLITS",
           "ImageTensorDataset"]
