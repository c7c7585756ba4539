"""Ready-made galaxy datasets: ``demo_rings`` (the finetuning walkthrough's data) and friends.

Every function has the signature ``(root, download=True, train=True, synthetic=False)`` and returns
``(catalog, label_cols)``, the catalog with ``id_str``, an absolute ``file_loc`` and the label columns:

1. ``synthetic=True``: a generated stand-in written once under ``root/<name>_synthetic/`` (offline; what
   the tests, the demo and the examples' ``--smoke`` runs use);
2. otherwise the dataset's files already in ``root``;
3. else, with ``download``, the registered resources (:data:`RESOURCES`) downloaded into ``root`` with
   astropy, md5-checked and unpacked. A failed download raises ``RuntimeError`` naming the URL and the
   ``synthetic=True`` alternative; nothing falls back silently.

The URLs and checksums in :data:`RESOURCES` could not be verified from the machines this code was
written on (no network); entries whose ``md5`` is None are accepted with a warning. Edit an entry to use
a mirror, or put the files into ``root`` by hand.
"""
from __future__ import annotations

import dataclasses
import shutil
import tarfile
import warnings
import zipfile
from pathlib import Path

import pandas as pd

from zoobot.shared.catalogs import load_catalog
from zoobot.shared.errors import missing_dependency

__all__ = [
    "RESOURCES",
    "DatasetResources",
    "Resource",
    "demo_rings",
    "galaxy_mnist",
    "gz2",
    "gz_candels",
    "gz_decals_5",
    "gz_hubble",
    "tidal",
]


@dataclasses.dataclass(frozen=True)
class Resource:
    """One downloadable file: saved as ``root/filename``; archives (.tar.gz, .tgz, .tar, .zip) are unpacked into ``root``."""

    url: str
    filename: str
    md5: str | None = None

    @property
    def is_archive(self) -> bool:
        name = self.filename.lower()
        return name.endswith((".tar.gz", ".tgz", ".tar", ".zip"))


@dataclasses.dataclass(frozen=True)
class DatasetResources:
    """Where a dataset's files come from and how they are laid out in ``root``.

    Attributes
    ----------
    resources : tuple of Resource
    train_catalog, test_catalog : str
        Catalog file names (parquet or csv) in ``root``.
    image_dir : str
        Folder in ``root`` that holds the images once unpacked.
    """

    resources: tuple
    train_catalog: str
    test_catalog: str
    image_dir: str = "images"


_HF = "https://huggingface.co/datasets/mwalmsley/{name}/resolve/main/{file}"


def _hf(name: str, *files: str) -> tuple:
    return tuple(Resource(_HF.format(name=name, file=f), f) for f in files)


def _standard(name: str) -> DatasetResources:
    train, test, images = f"{name}_train_catalog.parquet", f"{name}_test_catalog.parquet", f"{name}_images.tar.gz"
    return DatasetResources(resources=_hf(name, train, test, images), train_catalog=train, test_catalog=test)


#: Registered downloads, by dataset name. Unverified placeholders: see the module docstring.
RESOURCES: dict[str, DatasetResources] = {
    "demo_rings": _standard("demo_rings"),
    "gz_decals_5": _standard("gz_decals_5"),
    "gz2": _standard("gz2"),
    "galaxy_mnist": _standard("galaxy_mnist"),
    "gz_candels": _standard("gz_candels"),
    "gz_hubble": _standard("gz_hubble"),
    "tidal": _standard("tidal"),
}

# synthetic stand-ins: (number of galaxies in train, in test, image size)
_SYNTHETIC_SIZES = {
    "demo_rings": (300, 100, 64),
    "gz_decals_5": (600, 150, 64),
    "gz2": (600, 150, 64),
    "gz_candels": (600, 150, 64),
    "gz_hubble": (600, 150, 64),
}
_SYNTHETIC_SEEDS = {"train": 7001, "test": 7002}  # train and test never share a galaxy


def _schema(name: str):
    from zoobot.shared import schemas

    return getattr(schemas, name)


# ---------------------------------------------------------------------------------------------
# the datasets
# ---------------------------------------------------------------------------------------------

def demo_rings(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """A small binary ring / not-ring dataset, for finetuning demos.

    Parameters
    ----------
    root : str or Path
        Folder for the files (created if needed).
    download : bool
        Download the registered files when they are not in ``root`` yet.
    train : bool
        The train split (else the test split).
    synthetic : bool
        Write and use a generated offline stand-in instead: 300 train / 100 test galaxies of 64 x 64
        pixels, about half of them rings (:func:`zoobot.shared.synthetic.make_synthetic_catalog` with
        ``label='ring', ring_fraction=0.5``; train and test use different seeds).

    Returns
    -------
    catalog : pandas.DataFrame
        Columns ``id_str``, ``file_loc`` (absolute), ``subfolder``, ``filename``, ``ring`` (int 0/1).
    label_cols : list of str
        ``['ring']``.

    Raises
    ------
    RuntimeError
        If a download fails or a checksum differs (the message names the URL and ``root`` and suggests
        ``synthetic=True``).
    FileNotFoundError
        If the files are not in ``root`` and ``download=False``.

    Examples
    --------
    >>> import tempfile
    >>> catalog, label_cols = demo_rings(tempfile.mkdtemp(), synthetic=True)  # doctest: +SKIP
    >>> label_cols, list(catalog.columns)  # doctest: +SKIP
    (['ring'], ['id_str', 'file_loc', 'subfolder', 'filename', 'ring'])
    """
    if synthetic:
        catalog = _synthetic("demo_rings", root, train, label="ring")
        catalog = catalog[["id_str", "file_loc", "subfolder", "filename", "ring"]].copy()
        return catalog, ["ring"]
    catalog = _prepare("demo_rings", root, download, train)
    catalog["ring"] = catalog["ring"].astype(int)
    return catalog, ["ring"]


def gz_decals_5(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """Galaxy Zoo DECaLS DR5 volunteer votes (Walmsley et al. 2022), ``decals_dr5_ortho_schema`` columns.

    Parameters and errors as :func:`demo_rings`; ``synthetic=True`` writes 600 train / 150 test
    generated galaxies (64 px) with votes drawn down the DR5 tree.

    Returns
    -------
    catalog : pandas.DataFrame
    label_cols : list of str
        ``schemas.decals_dr5_ortho_schema.label_cols``.
    """
    return _tree_dataset("gz_decals_5", "decals_dr5_ortho_schema", root, download, train, synthetic)


def gz2(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """Galaxy Zoo 2 volunteer votes (Willett et al. 2013), ``gz2_ortho_schema`` columns.

    Parameters and errors as :func:`demo_rings`; ``synthetic=True`` writes generated galaxies with
    votes drawn down the GZ2 tree.
    """
    return _tree_dataset("gz2", "gz2_ortho_schema", root, download, train, synthetic)


def gz_candels(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """Galaxy Zoo CANDELS volunteer votes (Simmons et al. 2017), ``gz_candels_ortho_schema`` columns.

    Parameters and errors as :func:`demo_rings`; ``synthetic=True`` writes generated galaxies (DECaLS-like
    images, CANDELS tree).
    """
    return _tree_dataset("gz_candels", "gz_candels_ortho_schema", root, download, train, synthetic)


def gz_hubble(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """Galaxy Zoo Hubble volunteer votes (Willett et al. 2017), ``gz_hubble_ortho_schema`` columns.

    Parameters and errors as :func:`demo_rings`; ``synthetic=True`` writes generated galaxies (DECaLS-like
    images, Hubble tree).
    """
    return _tree_dataset("gz_hubble", "gz_hubble_ortho_schema", root, download, train, synthetic)


def galaxy_mnist(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """Galaxy MNIST: 10,000 DECaLS galaxies in four classes (``label`` 0-3: smooth round, smooth cigar,
    edge-on disk, unbarred spiral).

    No synthetic version exists (its labels are classes, not a decision tree): ``synthetic=True``
    raises ValueError.

    Returns
    -------
    catalog : pandas.DataFrame
    label_cols : list of str
        ``['label']``.
    """
    if synthetic:
        _no_synthetic("galaxy_mnist")
    catalog = _prepare("galaxy_mnist", root, download, train)
    return catalog, ["label"]


def tidal(root, download: bool = True, train: bool = True, synthetic: bool = False):
    """Tidal features (Atkinson et al. 2013 labels, as used by Walmsley et al. 2019).

    The label column name (``coarse_tidal_label``) follows galaxy-datasets as we know it; it is to be
    verified against the downloaded catalog. No synthetic version exists: ``synthetic=True`` raises
    ValueError.

    Returns
    -------
    catalog : pandas.DataFrame
    label_cols : list of str
        ``['coarse_tidal_label']``.
    """
    if synthetic:
        _no_synthetic("tidal")
    catalog = _prepare("tidal", root, download, train)
    return catalog, ["coarse_tidal_label"]


# ---------------------------------------------------------------------------------------------
# shared machinery
# ---------------------------------------------------------------------------------------------

def _tree_dataset(name, schema_attr, root, download, train, synthetic):
    schema = _schema(schema_attr)
    if synthetic:
        return _synthetic(name, root, train, label="votes", schema=schema), list(schema.label_cols)
    return _prepare(name, root, download, train), list(schema.label_cols)


def _no_synthetic(name: str) -> None:
    raise ValueError(
        f"{name} has no synthetic version: its labels do not come from a decision tree the generator can "
        f"answer. For offline data use demo_rings(root, synthetic=True) (binary rings) or "
        f"gz_decals_5(root, synthetic=True) (vote counts)."
    )


def _synthetic(name: str, root, train: bool, label: str, schema=None) -> pd.DataFrame:
    """Generate (or reuse) the synthetic stand-in of ``name``'s split."""
    from zoobot.shared.synthetic import GENERATOR_VERSION, make_synthetic_catalog

    split = "train" if train else "test"
    n_train, n_test, size = _SYNTHETIC_SIZES[name]
    n = n_train if train else n_test
    folder = Path(root).expanduser().resolve() / f"{name}_synthetic" / split
    catalog_path = folder / "catalog.parquet"
    if catalog_path.exists():
        catalog = load_catalog(catalog_path)
        reusable = (
            len(catalog) == n
            and "generator_version" in catalog.columns
            and bool((catalog["generator_version"] == GENERATOR_VERSION).all())
            and all(Path(f).exists() for f in catalog["file_loc"])
            and bool(catalog["id_str"].astype(str).str.startswith(f"synth-{split}").all())  # split-named ids
        )
        if reusable:
            return catalog
    kwargs = dict(ring_fraction=0.5) if label == "ring" else dict(schema=schema)
    catalog, _ = make_synthetic_catalog(
        folder, n_galaxies=n, image_size=size, label=label, seed=_SYNTHETIC_SEEDS[split], progress=False, split=split,
        **kwargs
    )
    return catalog


def _prepare(name: str, root, download: bool, train: bool) -> pd.DataFrame:
    """Use the files in ``root`` if present, else download them (if allowed); return the split's catalog."""
    spec = RESOURCES[name]
    root = Path(root).expanduser().resolve()
    catalog_file = root / (spec.train_catalog if train else spec.test_catalog)
    if not _present(spec, root, catalog_file):
        if not download:
            raise FileNotFoundError(
                f"{name}: {catalog_file.name} and the {spec.image_dir!r} folder are not in {root}. Pass "
                f"download=True to download them, or synthetic=True for a generated offline stand-in."
            )
        root.mkdir(parents=True, exist_ok=True)
        for resource in spec.resources:
            target = root / resource.filename
            if not target.exists():
                _download(resource, root, name)
            if resource.is_archive:
                _unpack(target, root)
        if not _present(spec, root, catalog_file):
            raise RuntimeError(
                f"{name}: after downloading into {root}, {catalog_file.name} or the {spec.image_dir!r} folder is "
                f"still missing. The registered resources may be out of date; use synthetic=True for a generated "
                f"offline stand-in."
            )
    return _read_catalog(catalog_file, root / spec.image_dir, root)


def _present(spec: DatasetResources, root: Path, catalog_file: Path) -> bool:
    return catalog_file.is_file() and (root / spec.image_dir).is_dir()


def _read_catalog(path: Path, image_dir: Path, root: Path) -> pd.DataFrame:
    catalog = load_catalog(path)
    if "subfolder" in catalog.columns and "filename" in catalog.columns:
        catalog["file_loc"] = [
            str(image_dir / str(sub) / str(f)) for sub, f in zip(catalog["subfolder"], catalog["filename"])
        ]
    elif "filename" in catalog.columns:
        catalog["file_loc"] = [str(image_dir / str(f)) for f in catalog["filename"]]
    elif "file_loc" in catalog.columns:
        catalog["file_loc"] = [f if Path(f).is_absolute() else str(root / f) for f in catalog["file_loc"].astype(str)]
    return catalog


def _download(resource: Resource, root: Path, name: str) -> Path:
    """Download one resource into ``root`` with ``astropy.utils.data.download_file``, checking its md5 sum.

    astropy fetches (http(s), ftp and ``file://`` URLs, with its progress bar) into a temporary file and
    ``compute_hash`` gives its md5; ours adds only what astropy has no argument for: the check against the
    registered sum, moving the file into ``root`` only once it passed (so ``root`` never holds a partial or
    corrupt file), and errors that name the URL, ``root`` and the ``synthetic=True`` alternative. astropy's
    own cache (``cache=True``) is not used: the files in ``root`` are the cache (see :func:`_prepare`).
    """
    try:
        from astropy.utils.data import compute_hash, download_file
    except ImportError as err:  # pragma: no cover - astropy is installed in development
        raise missing_dependency("astropy", f"downloading the {name} dataset", "fits") from err

    target = root / resource.filename
    try:
        fetched = Path(download_file(resource.url, cache=False, show_progress=True, timeout=60))
    except (OSError, ValueError) as err:  # urllib.error.URLError is an OSError
        raise RuntimeError(
            f"Could not download {resource.url} into {root} ({type(err).__name__}: {err}). Check the network or "
            f"place the file there by hand, or use synthetic=True for a generated offline stand-in of {name}."
        ) from err
    try:
        if resource.md5 is None:
            warnings.warn(
                f"{name}: no md5 checksum is registered for {resource.filename}; its integrity was not checked.",
                UserWarning,
                stacklevel=4,
            )
        else:
            got = compute_hash(str(fetched))
            if got != resource.md5.lower():
                raise RuntimeError(
                    f"Checksum mismatch for {resource.url} (downloaded into {root}): expected md5 {resource.md5}, "
                    f"got {got}. The file was deleted; try again later, or use synthetic=True for a generated "
                    f"offline stand-in of {name}."
                )
        shutil.move(str(fetched), str(target))
    finally:
        fetched.unlink(missing_ok=True)
    return target


def _unpack(archive: Path, root: Path) -> None:
    """Unpack a tar or zip archive into ``root``, refusing members that would land outside it.

    The standard library's ``tarfile`` / ``zipfile`` do the work (with tarfile's ``'data'`` filter where
    Python has it); the check before adds a clear error naming the unsafe members, on every Python.
    """
    root = root.resolve()

    def inside(member_name: str) -> bool:
        return (root / member_name).resolve().is_relative_to(root)

    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            bad = [m for m in zf.namelist() if not inside(m)]
            if bad:
                raise RuntimeError(f"Refusing to unpack {archive}: members outside {root}: {bad[:5]}")
            zf.extractall(root)
        return
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        bad = [m.name for m in members if not inside(m.name) or m.issym() or m.islnk()]
        if bad:
            raise RuntimeError(f"Refusing to unpack {archive}: unsafe members {bad[:5]}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: the standard safe filter
            tf.extractall(root, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; members were checked above
            tf.extractall(root, members=members)
