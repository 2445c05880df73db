"""Data: CIFAR-10 through torchvision, and the embedded photo set built from the photographs
scikit-image and scikit-learn ship (the default when CIFAR-10 is absent, and in CI).

Images are float tensors (C, H, W) in [0, 1]. Every split is fixed: the photo set is split by
photograph, CIFAR-10's training set is split 45k/5k into train/val by a seeded permutation, and
test is only for the final report.
"""
import functools
import hashlib
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image   # PIL is matplotlib's and scikit-image's dependency too
from skimage import data as skimage_data
from sklearn.datasets import load_sample_image
from torch.utils.data import Dataset, Subset

from ginr_common._io import atomic_write
from ginr_common.inputs import as_image, as_unit_range

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

# Split by photograph: no photograph feeds two splits (the stereo pair is one photograph). Training
# takes natural photographs only: scikit-image's colour ones, scikit-learn's two sample images
# (china, flower) and scikit-image's grayscale photographs as three equal channels. The
# validation photographs (a cat indoors, soft; matplotlib's portrait of Grace Hopper, sharp) are,
# like the test photographs (a portrait, a motorcycle scene), natural colour photographs; the test
# photographs are never trained on or used for model selection.
PHOTO_SPLITS = {
    "train": ["coffee", "rocket", "china", "flower", "camera", "moon", "brick", "grass", "gravel", "clock", "coins"],
    "val": ["chelsea", "grace_hopper"],
    "test": ["astronaut", "stereo_motorcycle"],
}
SKLEARN_PHOTOS = {"china": "china.jpg", "flower": "flower.jpg"}
MATPLOTLIB_PHOTOS = {"grace_hopper": "grace_hopper.jpg"}
TILE, TILE_SCALES, TILE_STRIDE = 32, (2, 4, 8), 24   # 32x32 tiles of the photo downsampled 2x, 4x, 8x
HR_SIZE, HR_SCALE = 128, 4                            # 128x128 crops at full resolution, LR = 32x32
HR_TRAIN_STRIDE, HR_TRAIN_SCALES = 32, (1, 2)          # more HR training crops: overlapping, photo at 1x and 1/2x
PHOTO_VERSION = 4


def _photographs(name):
    """The photograph(s) called ``name`` (scikit-learn's or matplotlib's sample images, else
    skimage.data) as float (3, H, W) tensors in [0, 1]; grayscale photographs become three equal channels."""
    if name in SKLEARN_PHOTOS:
        imgs = [load_sample_image(SKLEARN_PHOTOS[name])]
    elif name in MATPLOTLIB_PHOTOS:
        from matplotlib.cbook import get_sample_data
        with get_sample_data(MATPLOTLIB_PHOTOS[name]) as f:
            imgs = [np.asarray(Image.open(f).convert("RGB"))]
    else:
        imgs = getattr(skimage_data, name)()
        imgs = list(imgs[:2]) if name == "stereo_motorcycle" else [imgs]
    imgs = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im[..., :3] for im in imgs]
    return [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in imgs]


def resize(x, size):
    """Resize images (B, C, H, W) or volumes (B, C, D, H, W) to ``size``, clamped to [0, 1]: images
    by antialiased bicubic interpolation; volumes by averaging (area) where every axis shrinks,
    else trilinear interpolation."""
    size = tuple(size)
    if x.dim() == 5:
        down = all(a <= b for a, b in zip(size, x.shape[2:]))
        mode = dict(mode="area") if down else dict(mode="trilinear", align_corners=False)
        return F.interpolate(x, size=size, **mode).clamp(0, 1)
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _tiles(img, size, stride):
    """All tiles of ``size`` pixels along every axis of an image (C, H, W) or volume (C, D, H, W) at
    the given stride, (n, C, size, ...)."""
    d = img.dim() - 1
    t = img
    for a in range(d):
        t = t.unfold(1 + a, size, stride)          # C, n_1, ..., n_d, size, ..., size
    return t.permute(*range(1, d + 1), 0, *range(d + 1, 2 * d + 1)).reshape(-1, img.shape[0], *(size,) * d)


def build_photo_set(names, train=False):
    """32x32 tiles at several scales, and (HR 128x128, LR 32x32) pairs, from the named photos.
    Evaluation splits take non-overlapping HR crops of the full-resolution photo; the training
    split (``train``) overlapping ones of the photo at full and half resolution."""
    return build_image_set([img for name in names for img in _photographs(name)], train)


def build_image_set(images, train=False, tile=TILE, scales=TILE_SCALES, stride=TILE_STRIDE, hr_scale=HR_SCALE,
                    keep=None, hr_stride=None):
    """Tiles of ``tile`` pixels along every axis of each image (C, H, W) or volume (C, D, H, W),
    downsampled by each of ``scales`` (where it is still at least a tile: every 2 x tile / 32 ... ),
    overlapping by tile - stride, and (HR, LR) pairs: HR crops of ``hr_scale`` x tile pixels and
    their downsamples to the tile size (``resize``; evaluation splits: non-overlapping crops of the
    image; ``train``: overlapping ones of the image at full and half resolution; ``hr_stride``: the
    HR crops' stride instead). ``keep``: a test a tile or crop (float, [0, 1]) must pass (default:
    all). uint8 tensors {"tiles", "hr", "lr"}, the HR ones possibly empty."""
    d, C = images[0].dim() - 1, images[0].shape[0]
    kept = (lambda t: t) if keep is None else (lambda t: t[[bool(keep(x)) for x in t]] if len(t) else t)
    plans = tile_plan([x.shape[1:] for x in images], train, tile, scales, stride, hr_scale, hr_stride)
    out = {}
    for kind, size in (("tiles", tile), ("hr", tile * hr_scale)):
        parts = [kept(_tiles(scaled(images[i], s), size, step)) for i, s, step in plans[kind]]
        out[kind] = quantise(torch.cat(parts)) if parts else torch.zeros(0, C, *(size,) * d, dtype=torch.uint8)
    out["lr"] = quantise(resize(out["hr"].float() / 255, (tile,) * d)) if len(out["hr"]) else \
        torch.zeros(0, C, *(tile,) * d, dtype=torch.uint8)
    return out


def quantise(x):
    """Images in [0, 1] as 8-bit (how every set stores its tiles and crops)."""
    return (x * 255).round().to(torch.uint8)


def scaled(img, s):
    """An image (C, *S) downsampled by the factor ``s`` (``resize``; itself at s = 1)."""
    return img if s == 1 else resize(img[None], [n // s for n in img.shape[1:]])[0]


def tile_plan(shapes, train=False, tile=TILE, scales=TILE_SCALES, stride=TILE_STRIDE, hr_scale=HR_SCALE, hr_stride=None):
    """Which tiles ``build_image_set`` cuts from images of ``shapes`` (each (H, W) or (D, H, W)):
    {"tiles": [(image index, scale, step)], "hr": [...]}, in its order."""
    big = tile * hr_scale
    plan = {"tiles": [], "hr": []}
    for i, S in enumerate(shapes):
        plan["tiles"] += [(i, s, stride * tile // TILE) for s in scales if min(S) // s >= tile]
        step = hr_stride or (HR_TRAIN_STRIDE * tile // TILE if train else big)
        plan["hr"] += [(i, s, step) for s in (HR_TRAIN_SCALES if train else (1,)) if min(S) // s >= big]
    return plan


def load_photos(root=DATA_DIR, progress=True):
    """The embedded photo set, built deterministically on first use and cached under ``root``.
    Returns {split: {"tiles", "hr", "lr"}} of uint8 tensors."""
    path = Path(root) / f"photos_v{PHOTO_VERSION}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    if progress:
        print(f"building the embedded photo set from scikit-image's, scikit-learn's and matplotlib's photographs -> {path}")
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


class LazyTiles(Dataset):
    """The tiles (or HR crops) ``build_image_set`` would cut from image or volume files, read on
    demand: the same items in the same order, while memory holds only their index and the few
    files last read (``cache``, decoded and downsampled). ``read(path)`` -> (C, *S) in [0, 1];
    ``shapes``: each file's spatial shape; ``plan``: ``tile_plan(shapes, ...)["tiles"]`` (or
    ``["hr"]``) with ``size`` the tile's (or crop's) side."""

    def __init__(self, files, read, shapes, plan, size, cache=4):
        self.files, self.read, self.size = list(files), read, size
        self.index = []            # (file, scale, corner) per item, in build_image_set's order
        for i, s, step in plan:
            S = [n // s for n in shapes[i]]
            counts = [(n - size) // step + 1 for n in S]
            self.index += [(i, s, tuple(c * step for c in pos)) for pos in np.ndindex(*counts)]
        self._cached = functools.lru_cache(maxsize=cache)(self._scaled)

    def _scaled(self, i, s):
        return quantise(scaled(self.read(self.files[i]), s))

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        i, s, corner = self.index[k]
        img = self._cached(i, s)
        crop = img[(slice(None), *(slice(c, c + self.size) for c in corner))]
        return crop.float() / 255, 0

    def fingerprint(self):
        """sha256 of the files' names and sizes and of the tile index (what dataset_identity records;
        the files' bytes are hashed once, by ``folder_identity``, which a run records beside it)."""
        h = hashlib.sha256()
        for p in self.files:
            h.update(f"{Path(p).name}:{Path(p).stat().st_size}".encode())
        h.update(repr(self.index).encode())
        return h.hexdigest()


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


def load_dataset(name="photos", root=DATA_DIR, size=(TILE, TILE), channels=3, lazy=None):
    """{"train", "val", "test"} datasets for ``photos``, ``cifar10``, ``mni152`` (volumes, see
    ``load_mni152``) or a folder of images or volumes (``load_folder``: tiles of ``size`` with
    ``channels`` channels); all but CIFAR-10 also give "train_hr" (HR training crops, 4x the tile;
    2x for volumes) and "val_sr" / "test_sr" ((lr, hr) pairs) for super-resolution. ``lazy``: a
    folder's training split read from its files on demand (see ``load_folder``; None: by its size)."""
    if name == "cifar10":
        return load_cifar10(root)
    if name == "photos":
        sets = load_photos(root)
    elif name == "mni152":
        sets = load_mni152(root, size)
    elif Path(name).is_dir():
        sets = load_folder(name, size, channels, lazy=lazy)
    else:
        raise ValueError(f"data must be 'photos', 'cifar10', 'mni152' or a folder of images or volumes, got {name!r}")
    as_set = lambda x: x if isinstance(x, Dataset) else ImageTensorDataset(x)  # noqa: E731  (LazyTiles as they are)
    out = {k: as_set(v["tiles"]) for k, v in sets.items()}
    out["train_hr"] = as_set(sets["train"]["hr"])
    out["val_sr"], out["test_sr"] = ((sets[s]["lr"].float() / 255, sets[s]["hr"].float() / 255) for s in ("val", "test"))
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy", ".npz")
VOLUME_SUFFIXES = (".npy", ".npz", ".nii", ".nii.gz")
VOLUME_HR_SCALE = 2                  # volumes: HR crops of 2x the tile (64^3 for 32^3 inputs)
LAZY_PIXELS = 2**28                  # a folder's training files above this many values (1 GiB as float32) are read on demand


def _suffix(path):
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


def read_volume(path, channels=1):
    """One volume file as a float tensor (channels, D, H, W) in [0, 1]: a NumPy array (.npy, or the
    first array of an .npz) shaped (D, H, W) or (C, D, H, W), uint8 or floats in [0, 1]; or a NIfTI
    image (.nii, .nii.gz; needs nibabel: pip install nibabel), scaled by its 99.9th percentile and
    clipped to [0, 1] (MRI intensities have no fixed range). A single channel is repeated to
    ``channels``. ValueError naming the file otherwise."""
    path = Path(path)
    nifti = _suffix(path) in (".nii", ".nii.gz")
    if nifti:
        try:
            import nibabel   # optional: only NIfTI files need it
        except ImportError:
            raise ValueError(f"{path}: reading NIfTI files needs nibabel: pip install nibabel") from None
    try:
        if nifti:
            arr = np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
            arr = np.clip(arr / max(float(np.percentile(arr, 99.9)), 1e-8), 0, 1)
        else:
            arr = np.load(path)
            arr = arr[arr.files[0]] if isinstance(arr, np.lib.npyio.NpzFile) else arr
    except Exception as e:     # numpy's and nibabel's errors for a file that is not what its name says
        raise ValueError(f"{path}: not a readable volume ({type(e).__name__}: {e})") from e
    x = torch.from_numpy(np.array(arr))
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or min(x.shape[1:]) < 1:
        raise ValueError(f"{path}: a volume must be (D, H, W) or (C, D, H, W), got an array of shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    if x.shape[0] == 1 and channels > 1:
        x = x.expand(channels, -1, -1, -1)
    if x.shape[0] != channels:
        raise ValueError(f"{path}: {x.shape[0]} channels, the model reads {channels}; set model.in_channels="
                         f"{x.shape[0]}")
    return as_unit_range(x.contiguous(), str(path), torch.float32)


def _has_content(x, level=0.05, share=0.25):
    """Whether at least ``share`` of a volume's voxels are above ``level`` (not mostly background)."""
    return float((x > level).float().mean()) >= share


MNI_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
             "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
             "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
# split along the anterior-posterior axis (the array's second axis, 233 voxels at 1 mm): disjoint slabs
MNI_SLABS = {"test": (16, 80), "val": (80, 144), "train": (144, None)}
MNI_VERSION = 1


def mni152_files():
    """The MNI152 template volumes (T1, grey- and white-matter maps) that nilearn's wheel carries
    (no download): {name: path}. ValueError saying how to install nilearn when it is missing."""
    import importlib.util
    spec = importlib.util.find_spec("nilearn")
    if spec is None:
        raise ValueError("the mni152 volumes come with nilearn's wheel: pip install nilearn nibabel")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return {k: data / f for k, f in MNI_FILES.items()}


def load_mni152(root=DATA_DIR, size=(TILE,) * 3, progress=True):
    """Real MRI volumes without a download: the MNI152 T1 template and its grey- and white-matter
    maps (1 mm, 197 x 233 x 189), split into disjoint slabs along the second axis (``MNI_SLABS``:
    test 16 <= y < 80, validation 80 <= y < 144, training y >= 144). Training takes tiles and HR
    crops (2x the tile) of all three volumes at a stride of 16 voxels, validation and test of the
    T1 only at a stride of 32; tiles and crops that are mostly background (fewer than 25% of voxels above 0.05) are
    left out. Cached under ``root``. {split: {"tiles", "hr", "lr"}} as ``build_image_set``."""
    size = tuple(size)
    if len(size) != 3 or len(set(size)) != 1:
        raise ValueError(f"the mni152 data gives cubic 3-D tiles: model.input_size must be [S, S, S], got {list(size)}")
    path = Path(root) / f"mni152_v{MNI_VERSION}_{size[0]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    if progress:
        print(f"building the MNI152 volume set from nilearn's templates -> {path}")
    volumes = {k: read_volume(f) for k, f in mni152_files().items()}
    sets = {}
    for split, (lo, hi) in MNI_SLABS.items():
        names = ("t1", "gm", "wm") if split == "train" else ("t1",)
        slabs = [volumes[n][:, :, lo:hi] for n in names]
        step = 16 if split == "train" else 32        # voxels between tiles (and between HR crops)
        sets[split] = build_image_set(slabs, train=split == "train", tile=size[0], scales=(1, 2), stride=step * TILE // size[0],
                                      hr_scale=VOLUME_HR_SCALE, keep=_has_content, hr_stride=step)
    atomic_write(path, lambda f: torch.save(sets, f))
    return sets




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
            with Image.open(path) as im:
                arr = np.array(im if im.mode in ("L", "RGB", "RGBA", "I;16", "I", "F") else im.convert("RGB"))
            x = torch.from_numpy(arr if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if x.dtype in (torch.uint16, torch.int32) and x.dim() <= 3:
        x = x.float() / 65535                       # 16-bit images
    return as_unit_range(as_image(x, channels, name=str(path)), str(path), torch.float32)


def folder_splits(folder, suffixes=IMAGE_SUFFIXES):
    """{split: [files]} of a folder of images (or of volumes: ``suffixes=VOLUME_SUFFIXES``): its
    train/, val/ and test/ subfolders when it has them, else every such file in it, split by file
    name (a hash of the name: about 80/10/10, each split given at least one file when there are
    three or more)."""
    folder = Path(folder)
    files = lambda d: sorted(p for p in d.iterdir() if _suffix(p) in suffixes and p.is_file())  # noqa: E731
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
            raise ValueError(f"{folder}: no image or volume files ({', '.join(suffixes)}) for the {s} split; give it at "
                             "least three images, or train/, val/ and test/ subfolders with images in each")
    return splits


def folder_identity(name):
    """For a folder of images (``name`` not photos or cifar10): {"files": how many, "files_sha256": a hash
    of every file's split, name and bytes}, which a resume compares, so a changed folder is never
    silently continued. {} for the other data."""
    if name in ("photos", "cifar10", "mni152") or not Path(name).is_dir():
        return {}
    h, n = hashlib.sha256(), 0
    for split, files in folder_splits(name, tuple(dict.fromkeys(IMAGE_SUFFIXES + VOLUME_SUFFIXES))).items():
        for p in files:
            h.update(f"{split}/{p.name}".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
            n += 1
    return {"files": n, "files_sha256": h.hexdigest()}


def _pixels(path, volumes):
    """Pixels (voxels) times channels of an image or volume file, from its header where the format
    has one (PIL images, .npy, NIfTI), else by reading it."""
    path = Path(path)
    try:
        if _suffix(path) == ".npy":
            return math.prod(np.load(path, mmap_mode="r").shape)
        if _suffix(path) in (".nii", ".nii.gz"):
            import nibabel
            return math.prod(nibabel.load(str(path)).shape)
        if not volumes and _suffix(path) != ".npz":
            with Image.open(path) as im:
                return im.width * im.height * len(im.getbands())
    except Exception:      # unreadable here: reading it names the problem
        pass
    return (read_volume(path) if volumes else read_image(path, 1)).numel()


def load_folder(folder, size=(TILE, TILE), channels=3, progress=True, lazy=None):
    """An image folder as the photo set's splits: {split: {"tiles", "hr", "lr"}} uint8 tensors of tiles
    of ``size`` (every image at full, half, quarter and eighth resolution while still a tile) and HR
    crops of 4 x size with their downsamples (see ``build_image_set``), from ``folder_splits``. Images
    smaller than a tile are skipped (their count and names printed); a split left without any is an
    error naming them. ``lazy``: the training split's tiles and HR crops as ``LazyTiles`` (read from
    the files on demand; "lr" is then None); None: lazy when its files hold more than ``LAZY_PIXELS``
    values (channels x pixels), so folders larger than memory train in bounded memory. Validation
    and test splits are read into memory."""
    size = tuple(size)
    if len(size) not in (2, 3) or len(set(size)) != 1:
        raise ValueError(f"folders give square images or cubic volumes: model.input_size must be [S, S] or [S, S, S], "
                         f"got {list(size)}")
    volumes = len(size) == 3
    read = functools.partial(read_volume if volumes else read_image, channels=channels)
    splits = folder_splits(folder, VOLUME_SUFFIXES if volumes else IMAGE_SUFFIXES)
    if lazy is None:
        lazy = sum(_pixels(p, volumes) for p in splits["train"]) > LAZY_PIXELS
    out = {}
    for split, files in splits.items():
        on_demand = lazy and split == "train"
        shapes, images = [], []
        for p in files:             # on demand: each file is read once here (checked, measured), then let go
            x = read(p)
            shapes.append(tuple(x.shape[1:]))
            if not on_demand:
                images.append(x)
        if volumes and len(set(shapes)) > 1:
            raise ValueError(f"{folder}: the {split} volumes have mixed shapes {sorted(set(shapes))[:4]}; give volumes of "
                             "one shape")
        small = [p.name for p, S in zip(files, shapes) if min(S) < size[0]]
        if len(small) == len(files):
            raise ValueError(f"{folder}: every {split} image is smaller than the model's input size "
                             f"{size[0]}x{size[0]}: {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}")
        keep = [i for i, S in enumerate(shapes) if min(S) >= size[0]]
        opts = dict(train=split == "train", tile=size[0], scales=(1, 2, 4, 8), stride=TILE_STRIDE,
                    hr_scale=VOLUME_HR_SCALE if volumes else HR_SCALE)
        if on_demand:
            kept_files, kept_shapes = [files[i] for i in keep], [shapes[i] for i in keep]
            plan = tile_plan(kept_shapes, **opts)
            out[split] = {"tiles": LazyTiles(kept_files, read, kept_shapes, plan["tiles"], size[0]),
                          "hr": LazyTiles(kept_files, read, kept_shapes, plan["hr"], size[0] * opts["hr_scale"]),
                          "lr": None}
        else:
            out[split] = build_image_set([images[i] for i in keep], **opts)
        out[split]["files"] = [files[i].name for i in keep]
        if progress:
            print(f"{folder}: {split} {len(files)} file(s) -> {len(out[split]['tiles'])} tiles of "
                  f"{'x'.join(map(str, size))}, {len(out[split]['hr'])} HR crops"
                  + (" (read from the files on demand)" if on_demand else "")
                  + (f"; {len(small)} smaller than a tile skipped ({', '.join(small[:3])}"
                     f"{' ...' if len(small) > 3 else ''})" if small else ""))
    return out


def augment(images, generator):
    """Random symmetries of a square batch (B, C, S, S): one of the 8 flips/rotations and one of
    the C! channel orders per image, drawn from ``generator`` (so a step's batch is reproducible).
    Volumes (B, C, D, H, W): a flip or not along each axis, and the channel order."""
    B, C = images.shape[:2]
    if images.dim() == 5:
        flips = torch.randint(0, 2, (B, 3), generator=generator).tolist()
        perms = [torch.randperm(C, generator=generator) for _ in range(B)]
        return torch.stack([x.flip([1 + a for a in range(3) if f[a]])[p] for x, f, p in zip(images, flips, perms)])
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
    elif hasattr(dataset, "fingerprint"):
        h.update(dataset.fingerprint().encode())
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


__all__ = ["LazyTiles", "augment", "dataset_identity", "folder_identity", "folder_splits", "load_folder", "read_image", "resize", "sparse_masks",
           "load_dataset", "load_photos", "load_cifar10", "load_sr_pairs", "PHOTO_SPLITS",
           "ImageTensorDataset"]
