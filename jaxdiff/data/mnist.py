"""MNIST and Fashion-MNIST: a prepared tensorflow-datasets copy, or the official IDX files.

Where :func:`load_mnist` reads from, in order:

1. a prepared tensorflow-datasets copy in a folder that is *named* (``data_dir=`` / ``--data-dir``,
   else ``$TFDS_DATA_DIR``); a named folder without one is an error, never a silent download;
2. a prepared copy in the TFDS default folder ``~/tensorflow_datasets``;
3. the four IDX files of the official distribution, downloaded once from the mirror that
   tensorflow-datasets uses (``$JAXDIFF_MNIST_URL`` replaces it), each checked against its size
   and SHA-256 (the values tensorflow-datasets registers; ``$JAXDIFF_MNIST_SHA256`` replaces them).

Preparing MNIST with tensorflow-datasets needs TensorFlow; reading a prepared array_record copy
does not, and neither does this module. Whatever the source, the decoded uint8 arrays are cached
once under ``<cache>/datasets/<dataset>/`` (``<cache>`` is ``$JAXDIFF_CACHE_DIR``, else
``$XDG_CACHE_HOME/jaxdiff`` or ``~/.cache/jaxdiff``), written atomically, so later loads take a
fraction of a second; a cache file that cannot be read (truncated, damaged) is rebuilt from its
source with a :class:`DataCacheWarning`. Images come in the order of their source: the IDX files'
order for a download, the record order of the tensorflow-datasets copy for a prepared copy (the
same images, shuffled differently).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxdiff._paths import resolve_cache_dir
from jaxdiff.data.array_cache import (
    DataCacheWarning,
    commit_cache_file,
    discard,
    open_cache_file,
    read_cache,
)
from jaxdiff.data.download import (
    DataNotFoundError,
    FileSpec,
    fetch,
    parse_checksums,
    read_checksums,
)
from jaxdiff.data.idx import gunzip_idx
from jaxdiff.data.images import resize_bilinear

__all__ = ["IDX_DATASETS", "DataCacheWarning", "IdxDataset", "load_mnist"]

_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """A data set distributed as the four MNIST-style IDX files.

    Attributes:
      name: the tensorflow-datasets name (``"mnist"``), also the cache folder's name.
      title: what messages call it (``"MNIST"``).
      url: base URL of the default mirror (the one tensorflow-datasets downloads from).
      files: ``{file name: FileSpec}`` for the four ``*-ubyte.gz`` files, from
        tensorflow-datasets' registered checksums.
    """

    name: str
    title: str
    url: str
    files: Mapping[str, FileSpec]

    @property
    def env_prefix(self) -> str:
        return "JAXDIFF_" + self.name.upper()


# Sizes and SHA-256 as registered by tensorflow-datasets (its url_checksums/mnist.txt and
# fashion_mnist.txt), in the format of a $JAXDIFF_<DATASET>_SHA256 file; the default mirrors are
# the URLs it downloads from.
_MNIST_FILES = """\
train-images-idx3-ubyte.gz\t9912422\t440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
train-labels-idx1-ubyte.gz\t28881\t3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
t10k-images-idx3-ubyte.gz\t1648877\t8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
t10k-labels-idx1-ubyte.gz\t4542\tf7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
"""
_FASHION_MNIST_FILES = """\
train-images-idx3-ubyte.gz\t26421880\t3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84
train-labels-idx1-ubyte.gz\t29515\ta04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845
t10k-images-idx3-ubyte.gz\t4422102\t346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073
t10k-labels-idx1-ubyte.gz\t5148\t67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5
"""

IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        "mnist",
        "MNIST",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        parse_checksums(_MNIST_FILES, "jaxdiff's MNIST table"),
    ),
    "fashion_mnist": IdxDataset(
        "fashion_mnist",
        "Fashion-MNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        parse_checksums(_FASHION_MNIST_FILES, "jaxdiff's Fashion-MNIST table"),
    ),
}

_BOUND = r"(-?\d+(?:\.\d+)?%?)?"
_SPLIT_RE = re.compile(rf"^(train|test)(?:\[{_BOUND}:{_BOUND}\])?$")


def _parse_split(split: object) -> tuple[str, str | None, str | None]:
    """``"train[:90%]"`` -> ``("train", None, "90%")``; a ValueError for anything else."""
    match = _SPLIT_RE.match(split) if isinstance(split, str) else None
    units = {b.endswith("%") for b in match.groups()[1:] if b} if match else set()
    bounds = [b for b in match.groups()[1:] if b] if match else []
    if (
        match is None
        or len(units) > 1
        or any("." in b and not b.endswith("%") for b in bounds)
        or any(b.endswith("%") and abs(float(b[:-1])) > 100 for b in bounds)
    ):
        raise ValueError(
            "split must be 'train' (60,000 images) or 'test' (10,000), optionally with a "
            "tensorflow-datasets slice like 'train[:90%]', 'train[1000:2000]' or 'test[:1000]' "
            f"(percents within [-100%, 100%]); got {split!r}."
        )
    return match.group(1), match.group(2), match.group(3)


def _slice_bounds(lo: str | None, hi: str | None, n: int, split: str) -> slice:
    """tensorflow-datasets' slice semantics: percents round to the closest example, negative
    bounds count from the end, and a bound beyond the split is an error."""

    def absolute(bound: str | None) -> int | None:
        if bound is None:
            return None
        if bound.endswith("%"):
            return round(float(bound[:-1]) * n / 100.0)
        value = int(bound)
        if abs(value) > n:
            raise ValueError(f"slice {split!r} reaches past the {n:,} examples of the split.")
        return value

    return slice(absolute(lo), absolute(hi))


def _not_found(ds: IdxDataset, looked: str, origin: str) -> DataNotFoundError:
    parent_hint = ""
    if os.path.basename(looked) == ds.name or os.path.exists(
        os.path.join(looked, "dataset_info.json")
    ):
        parent_hint = " That looks like a dataset folder itself; pass its parent instead."
    return DataNotFoundError(
        f"No prepared {ds.title} found in {looked} (from {origin}; looked for "
        f"{ds.name}/<version>/dataset_info.json and its array_record files).{parent_hint} Pass "
        f"the folder that holds {ds.name}/<version>/ (--data-dir DIR, data_dir=DIR or "
        "TFDS_DATA_DIR=DIR), or name no folder at all to download the official IDX files "
        f"(set {ds.env_prefix}_URL for a mirror)."
    )


def _mirror_fix(ds: IdxDataset) -> str:
    return (
        f"To use another mirror set {ds.env_prefix}_URL=<base URL> (http(s):// or file://, "
        f"holding the four *-ubyte.gz files) and, if it re-compressed them, "
        f"{ds.env_prefix}_SHA256=<file of name<TAB>size<TAB>sha256 lines>; or name a prepared "
        "tensorflow-datasets copy with --data-dir DIR or TFDS_DATA_DIR=DIR."
    )


# --------------------------------------------------------------------------------------------------
# The decoded-array cache
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def _tfds_copy(root: str, ds: IdxDataset) -> bool:
    return bool(glob.glob(os.path.join(glob.escape(root), ds.name, "*", "dataset_info.json")))


def _from_tfds(
    root: str, ds: IdxDataset, split: str, origin: str, cache: Path
) -> tuple[np.ndarray, np.ndarray, str]:
    """The whole split of a prepared tensorflow-datasets copy, decoded once and cached."""
    import tensorflow_datasets as tfds  # lazy: only this source needs it

    builder = tfds.builder(ds.name, data_dir=root)
    where = os.fspath(builder.data_dir)  # .../<name>/<version>
    if not builder.is_prepared():
        raise _not_found(ds, root, origin)
    file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
    if str(file_format) != "array_record":
        raise DataNotFoundError(
            f"{ds.title} at {where} is prepared in the {file_format!s} format, which needs "
            "TensorFlow to read; jaxdiff reads array_record copies. Point --data-dir / "
            "TFDS_DATA_DIR at another copy, or name no folder to download the IDX files."
        )
    # The cache key follows the copy: its path, and every file's name, size and mtime.
    files = sorted((e.name, e.stat()) for e in os.scandir(where) if e.is_file())
    stamp = [os.path.realpath(where)] + [f"{n}:{st.st_size}:{st.st_mtime_ns}" for n, st in files]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    path = cache / "datasets" / ds.name / f"tfds-{key}" / f"{split}.npz"
    description = f"tensorflow-datasets {ds.name} {builder.info.version} at {where}"
    n = builder.info.splits[split].num_examples
    cached = read_cache(path, n, f"the tensorflow-datasets copy at {where}")
    if cached is not None:
        return cached[0], cached[1], f"{description} (decoded copy cached in {path.parent})"

    source = tfds.data_source(
        ds.name,
        split=split,
        data_dir=root,
        download=False,
        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
    )
    images, labels = _decode_records(source.__getitems__(list(range(len(source)))))
    expected = tuple(builder.info.features["image"].shape[:2])
    if images.shape[1:] != expected or images.shape[0] != n:
        raise DataNotFoundError(
            f"{ds.title} at {where} decoded to {images.shape[0]} images of shape "
            f"{images.shape[1:]}, expected {n} of {expected}: the copy looks corrupt; rebuild it "
            "or point at another one."
        )
    try:
        fd, tmp = open_cache_file(path, ds.title)
        commit_cache_file(fd, tmp, path, images, labels, description)
        description += f" (decoded once, cached in {path.parent})"
    except OSError as err:  # a read-only cache only costs the decoding (DataNotFoundError too)
        description += f" (decoded; not cached: {err})"
    return images, labels, description


def _decode_records(records) -> tuple[np.ndarray, np.ndarray]:
    """Serialized ``tf.train.Example`` records -> uint8 images ``(N, H, W)``, uint8 labels."""
    from PIL import Image
    from tensorflow_datasets.proto import tf_example_pb2  # protobuf only; no TensorFlow

    images, labels = [], np.empty(len(records), dtype=np.uint8)
    for i, record in enumerate(records):
        feature = tf_example_pb2.Example.FromString(record).features.feature
        png = feature["image"].bytes_list.value[0]
        images.append(np.asarray(Image.open(io.BytesIO(png)).convert("L")))
        labels[i] = feature["label"].int64_list.value[0]
    return np.stack(images) if images else np.zeros((0, 28, 28), np.uint8), labels


def _from_idx(
    ds: IdxDataset, split: str, cache: Path, *, download: bool, progress: bool
) -> tuple[np.ndarray, np.ndarray, str]:
    """The split from the cache, else downloaded, verified, decoded and cached."""
    path = cache / "datasets" / ds.name / "idx" / f"{split}.npz"
    base = os.environ.get(f"{ds.env_prefix}_URL") or ds.url
    cached = read_cache(path, None, f"the {ds.title} IDX files, downloaded again from {base}")
    if cached is not None:
        return cached[0], cached[1], f"{cached[2]} (cached in {path.parent})"
    if not download:
        raise DataNotFoundError(
            f"{ds.title} ({split}) is not in the cache {path.parent} and downloading is off "
            "(download=False). Allow the download, or name a prepared tensorflow-datasets copy "
            "with --data-dir DIR or TFDS_DATA_DIR=DIR."
        )
    if not re.match(r"^(https?|file)://", base):
        raise DataNotFoundError(
            f"{ds.env_prefix}_URL must be an http://, https:// or file:// base URL; got {base!r}."
        )
    base = base if base.endswith("/") else base + "/"
    specs = dict(ds.files)
    table_path = os.environ.get(f"{ds.env_prefix}_SHA256")
    if table_path:
        try:
            table = read_checksums(table_path)
        except ValueError as err:  # a malformed table is a data problem, not a bad argument
            raise DataNotFoundError(f"{err} Fix {ds.env_prefix}_SHA256's file.") from None
        missing = [f for f in _SPLITS[split] if f not in table]
        if missing:
            raise DataNotFoundError(
                f"the checksum file {table_path} ({ds.env_prefix}_SHA256) has no line for "
                f"{', '.join(missing)}; add '<file name><TAB><size><TAB><sha256>' lines for all "
                "four files."
            )
        specs.update(table)

    fd, tmp = open_cache_file(path, ds.title)  # an unwritable cache fails here, before downloading
    try:
        arrays = []
        for name in _SPLITS[split]:
            body = fetch(base + name, specs[name], fix=_mirror_fix(ds), progress=progress)
            try:
                arrays.append(gunzip_idx(body, name=f"{name} from {base}"))
            except ValueError as err:
                raise DataNotFoundError(f"{err} {_mirror_fix(ds)}") from None
        images, labels = arrays
        if (
            images.ndim != 3
            or images.shape[1:] != (28, 28)
            or images.dtype != np.uint8
            or labels.shape != images.shape[:1]
            or labels.dtype != np.uint8
            or (labels.size and labels.max() > 9)
        ):
            raise DataNotFoundError(
                f"the {ds.title} {split} files from {base} hold images {images.shape} "
                f"{images.dtype} and labels {labels.shape} {labels.dtype}; expected (N, 28, 28) "
                "uint8 and (N,) uint8 in 0..9. " + _mirror_fix(ds)
            )
    except BaseException:  # failed or interrupted (Ctrl-C too): leave nothing behind
        discard(fd, tmp)
        raise
    origin = f"{ds.title} IDX files from {base} (size and SHA-256 verified)"
    commit_cache_file(fd, tmp, path, images, labels, origin)
    return images, labels, f"{origin}, downloaded now (cached in {path.parent})"


# --------------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------------


def _check_int(value, name: str, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int ({hint}); got {value!r}.")


def load_mnist(
    split: str = "train",
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    image_size: int = 28,
    limit: int | None = None,
    download: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    return_source: bool = False,
):
    """Load MNIST (or Fashion-MNIST) as float32 images in ``[-1, 1]`` and int32 labels.

    Reads a prepared tensorflow-datasets copy when one is named or sits in the TFDS default
    folder, else the official IDX files, downloaded once (see the module docstring for the order,
    the mirror and checksum overrides, and the cache). No TensorFlow is needed either way.

    Args:
      split: ``"train"`` (60,000 images) or ``"test"`` (10,000), optionally with a
        tensorflow-datasets slice such as ``"train[:90%]"`` or ``"test[:1000]"``.
      dataset: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: folder holding ``<dataset>/<version>/`` (a prepared tensorflow-datasets folder in
        array_record format). Defaults to ``$TFDS_DATA_DIR``; a folder named either way must hold
        the data.
      image_size: output height and width. 28 returns the original pixels; any other size
        resizes bilinearly (half-pixel centres, like torchvision's ``Resize(32)`` used by the DDPM
        tutorials, without rounding back to uint8). ``32`` suits a U-Net with three
        down-samplings.
      limit: if given, only the first ``limit`` examples of the split (in source order).
      download: whether the IDX files may be downloaded when they are not cached. ``None``
        (default) allows it only when no folder was named; ``True`` also when a named folder
        holds no copy; ``False`` never.
      cache_dir: cache root (default ``$JAXDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxdiff`` or
        ``~/.cache/jaxdiff``); the arrays go to ``<cache_dir>/datasets/<dataset>/``.
      progress: show a progress bar (bytes and rate, on stderr) while downloading.
      return_source: also return a one-line description of where the data came from.

    Returns:
      ``(images, labels)``, or ``(images, labels, source)`` with ``return_source``: ``images``
      float32 ``(N, image_size, image_size, 1)`` with values in ``[-1, 1]`` (pixel / 127.5 - 1),
      ``labels`` int32 ``(N,)`` in ``0..9``.

    Raises:
      ValueError: bad ``split``, ``dataset``, ``image_size`` or ``limit`` (checked before any
        reading).
      DataNotFoundError: no copy where one was named, an unusable copy, or a failed download
        (:class:`DownloadError`) or unwritable cache; one line that names the file or folder and
        the fix.
    """
    if dataset not in IDX_DATASETS:
        raise ValueError(f"dataset must be one of {sorted(IDX_DATASETS)}; got {dataset!r}.")
    ds = IDX_DATASETS[dataset]
    name, lo, hi = _parse_split(split)
    _check_int(image_size, "image_size", "28 keeps the original pixels, 32 resizes")
    if limit is not None:
        _check_int(limit, "limit", "or None for all examples")
    cache = resolve_cache_dir(cache_dir)

    named = data_dir if data_dir is not None else (os.environ.get("TFDS_DATA_DIR") or None)
    origin = "the data_dir argument" if data_dir is not None else "TFDS_DATA_DIR"
    default_root = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    if named is not None:
        root = os.path.abspath(os.path.expanduser(os.fspath(named)))
        if _tfds_copy(root, ds):
            images, labels, source = _from_tfds(root, ds, name, origin, cache)
        elif download:
            images, labels, source = _from_idx(ds, name, cache, download=True, progress=progress)
        else:
            raise _not_found(ds, root, origin)
    else:
        found = None
        if _tfds_copy(default_root, ds):
            try:
                found = _from_tfds(default_root, ds, name, "the TFDS default folder", cache)
            except DataNotFoundError:  # another version or format: not named, so not required
                found = None
        if found is None:
            found = _from_idx(ds, name, cache, download=download is not False, progress=progress)
        images, labels, source = found

    sel = _slice_bounds(lo, hi, images.shape[0], split)
    images, labels = images[sel], labels[sel]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    # pixel / 127.5 - 1 maps 0..255 exactly onto [-1, 1]; a lookup table is the fastest way.
    out = (np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0))[images]
    if image_size != out.shape[1] or image_size != out.shape[2]:
        out = resize_bilinear(out, image_size, image_size)
        np.clip(out, -1.0, 1.0, out=out)  # resize weights sum to 1 only up to rounding
    result = (out[..., None], labels.astype(np.int32))
    return (*result, source) if return_source else result
