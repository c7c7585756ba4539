"""demo_rings and friends: synthetic stand-ins, files already in root, downloads (from local
``file://`` URLs, so the real download code runs without a network), checksums, failures.

The resource table ``RESOURCES`` is data (where files live), so tests point it at local files with
``monkeypatch``; the download, checksum and unpacking code itself is never replaced.
"""
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zoobot.shared import benchmark_datasets, datasets, schemas
from zoobot.shared.datasets import DatasetResources, Resource


def write_demo_files(folder, n=6):
    """A tiny dataset as it would be published: two catalogs and a tar.gz of images."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i in range(n):
            png = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(png, format="PNG")
            info = tarfile.TarInfo(f"images/ring{i % 2}/galaxy_{i}.png")
            info.size = png.tell()
            png.seek(0)
            tar.addfile(info, png)
            rows.append({"id_str": f"{i:03d}", "subfolder": f"ring{i % 2}", "filename": f"galaxy_{i}.png",
                         "ring": i % 2})
    (folder / "demo_rings_images.tar.gz").write_bytes(buffer.getvalue())
    catalog = pd.DataFrame(rows)
    catalog.iloc[:4].to_parquet(folder / "demo_rings_train_catalog.parquet", index=False)
    catalog.iloc[4:].to_parquet(folder / "demo_rings_test_catalog.parquet", index=False)
    return folder


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def local_resources(folder, md5s=None):
    files = ["demo_rings_train_catalog.parquet", "demo_rings_test_catalog.parquet", "demo_rings_images.tar.gz"]
    md5s = md5s or {f: md5(folder / f) for f in files}
    return DatasetResources(
        resources=tuple(Resource((folder / f).as_uri(), f, md5s[f]) for f in files),
        train_catalog=files[0], test_catalog=files[1],
    )


# ---------------------------------------------------------------------------------------------
# synthetic stand-ins
# ---------------------------------------------------------------------------------------------

def test_demo_rings_synthetic_is_balanced_and_offline(tmp_path):
    train, label_cols = datasets.demo_rings(tmp_path, synthetic=True)
    test, _ = datasets.demo_rings(tmp_path, train=False, synthetic=True)
    assert label_cols == ["ring"]
    assert list(train.columns) == ["id_str", "file_loc", "subfolder", "filename", "ring"]
    assert len(train) == 300 and len(test) == 100
    assert train["ring"].dtype == np.int64 and set(train["ring"]) == {0, 1}
    assert 0.4 < train["ring"].mean() < 0.6 and 0.35 < test["ring"].mean() < 0.65
    assert not set(train["id_str"]) & set(test["id_str"])
    first = np.asarray(Image.open(train["file_loc"][0]))
    assert first.shape == (64, 64, 3)
    assert all(f.endswith(sub + "/" + name) for f, sub, name in
               zip(train["file_loc"], train["subfolder"], train["filename"]))
    # a second call reuses the files instead of regenerating them
    mtime = (tmp_path / "demo_rings_synthetic" / "train" / "catalog.parquet").stat().st_mtime_ns
    again, _ = datasets.demo_rings(tmp_path, synthetic=True)
    pd.testing.assert_frame_equal(again, train)
    assert (tmp_path / "demo_rings_synthetic" / "train" / "catalog.parquet").stat().st_mtime_ns == mtime


def test_gz_decals_5_synthetic_and_the_benchmark_splits(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets._SYNTHETIC_SIZES, "gz_decals_5", (50, 20, 24))  # the default 600 / 150 is slow
    catalog, label_cols = datasets.gz_decals_5(tmp_path, synthetic=True)
    assert label_cols == schemas.decals_dr5_ortho_schema.label_cols
    assert set(label_cols) <= set(catalog.columns) and len(catalog) == 50
    schema, (train, val, test) = benchmark_datasets.get_gz_decals_dr5_benchmark_dataset(
        tmp_path, random_state=1, download=False, synthetic=True)
    assert schema is schemas.decals_dr5_ortho_schema
    assert (len(train), len(val), len(test)) == (45, 5, 20)
    ids = [set(part["id_str"]) for part in (train, val, test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert ids[0] | ids[1] == set(catalog["id_str"])


def test_benchmark_split_matches_scikit_learn():
    """Expected rows recorded from sklearn.model_selection.train_test_split(catalog, test_size=0.1, random_state=7)."""
    catalog = pd.DataFrame({"id_str": [str(i) for i in range(37)]})
    train, test = benchmark_datasets.sklearn_style_split(catalog, test_size=0.1, random_state=7)
    assert train["id_str"].tolist() == [
        "18", "13", "9", "15", "22", "5", "34", "20", "27", "17", "11", "0", "12", "21", "16", "36", "6", "31",
        "26", "10", "30", "29", "8", "32", "14", "35", "28", "7", "23", "19", "3", "25", "4"]
    assert test["id_str"].tolist() == ["33", "2", "24", "1"]
    with pytest.raises(ValueError, match="test_size"):
        benchmark_datasets.sklearn_style_split(catalog, test_size=1.5)


def test_datasets_without_a_tree_have_no_synthetic_version(tmp_path):
    for func in (datasets.galaxy_mnist, datasets.tidal):
        with pytest.raises(ValueError, match="no synthetic version.*demo_rings"):
            func(tmp_path, synthetic=True)


# ---------------------------------------------------------------------------------------------
# real files: in root, downloaded, failing
# ---------------------------------------------------------------------------------------------

def test_download_unpack_and_load_from_file_urls(tmp_path, monkeypatch):
    server = write_demo_files(tmp_path / "server")
    monkeypatch.setitem(datasets.RESOURCES, "demo_rings", local_resources(server))
    root = tmp_path / "data"
    catalog, label_cols = datasets.demo_rings(root, download=True, train=True)
    assert label_cols == ["ring"] and len(catalog) == 4
    assert catalog["id_str"].tolist() == ["000", "001", "002", "003"]
    for file_loc, i in zip(catalog["file_loc"], range(4)):
        assert file_loc == str(root.resolve() / "images" / f"ring{i % 2}" / f"galaxy_{i}.png")
        assert np.asarray(Image.open(file_loc))[0, 0, 0] == 20 * i
    assert not list(root.glob("*.part"))
    test, _ = datasets.demo_rings(root, download=False, train=False)
    assert test["ring"].tolist() == [0, 1]


def test_files_already_in_root_are_used_without_downloading(tmp_path, monkeypatch):
    root = write_demo_files(tmp_path / "root")
    with tarfile.open(root / "demo_rings_images.tar.gz") as tar:
        tar.extractall(root)
    missing = tmp_path / "nowhere"
    unreachable = DatasetResources(
        resources=(Resource((missing / "x.parquet").as_uri(), "x.parquet", None),),
        train_catalog="demo_rings_train_catalog.parquet", test_catalog="demo_rings_test_catalog.parquet",
    )
    monkeypatch.setitem(datasets.RESOURCES, "demo_rings", unreachable)
    catalog, _ = datasets.demo_rings(root, download=True)
    assert len(catalog) == 4 and all(pd.Series(catalog["file_loc"]).map(lambda f: open(f, "rb").close() is None))


def test_download_failure_names_url_root_and_the_synthetic_alternative(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_server" / "demo_rings_train_catalog.parquet"
    spec = DatasetResources(resources=(Resource(missing.as_uri(), "demo_rings_train_catalog.parquet", None),),
                            train_catalog="demo_rings_train_catalog.parquet",
                            test_catalog="demo_rings_test_catalog.parquet")
    monkeypatch.setitem(datasets.RESOURCES, "demo_rings", spec)
    root = tmp_path / "data"
    with pytest.raises(RuntimeError) as info:
        datasets.demo_rings(root, download=True)
    message = str(info.value)
    assert missing.as_uri() in message and str(root.resolve()) in message and "synthetic=True" in message
    assert not list(root.glob("*"))  # no partial file left behind


def test_checksum_mismatch_deletes_the_file(tmp_path, monkeypatch):
    server = write_demo_files(tmp_path / "server")
    resources = local_resources(server)
    bad = DatasetResources(
        resources=(Resource(resources.resources[0].url, resources.resources[0].filename, "0" * 32),)
        + resources.resources[1:],
        train_catalog=resources.train_catalog, test_catalog=resources.test_catalog,
    )
    monkeypatch.setitem(datasets.RESOURCES, "demo_rings", bad)
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match=r"Checksum mismatch.*expected md5 0{32}.*synthetic=True"):
        datasets.demo_rings(root)
    assert not (root / "demo_rings_train_catalog.parquet").exists()
    assert not list(root.glob("*.part"))
    # astropy's temporary download (astropy-download-<pid>-...) is deleted too
    assert not list(Path(tempfile.gettempdir()).glob(f"astropy-download-{os.getpid()}-*"))


def test_missing_checksum_downloads_with_a_warning(tmp_path, monkeypatch):
    server = write_demo_files(tmp_path / "server")
    names = ["demo_rings_train_catalog.parquet", "demo_rings_test_catalog.parquet", "demo_rings_images.tar.gz"]
    monkeypatch.setitem(datasets.RESOURCES, "demo_rings", local_resources(server, md5s={n: None for n in names}))
    with pytest.warns(UserWarning, match="no md5 checksum"):
        catalog, _ = datasets.demo_rings(tmp_path / "data")
    assert len(catalog) == 4


def test_no_files_and_no_download_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"demo_rings_train_catalog.parquet.*download=True.*synthetic=True"):
        datasets.demo_rings(tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="gz_decals_5_test_catalog"):
        datasets.gz_decals_5(tmp_path, download=False, train=False)


def test_unsafe_archive_is_refused(tmp_path, monkeypatch):
    server = tmp_path / "server"
    write_demo_files(server)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (server / "demo_rings_images.tar.gz").write_bytes(buffer.getvalue())
    monkeypatch.setitem(datasets.RESOURCES, "demo_rings", local_resources(server))
    with pytest.raises(RuntimeError, match="Refusing to unpack"):
        datasets.demo_rings(tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists()


def test_every_dataset_returns_its_own_label_columns(tmp_path, monkeypatch):
    """Each downloader reads its own registry entry and returns its schema's columns."""
    expected = {
        "gz2": schemas.gz2_ortho_schema.label_cols,
        "gz_candels": schemas.gz_candels_ortho_schema.label_cols,
        "gz_hubble": schemas.gz_hubble_ortho_schema.label_cols,
        "galaxy_mnist": ["label"],
        "tidal": ["coarse_tidal_label"],
    }
    for name, label_cols in expected.items():
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        pd.DataFrame({"id_str": ["a"], "filename": ["a.png"], **{c: [1] for c in label_cols}}).to_parquet(
            root / datasets.RESOURCES[name].train_catalog)
        catalog, got = getattr(datasets, name)(root, download=False)
        assert got == label_cols, name
        assert catalog["file_loc"][0] == str(root.resolve() / "images" / "a.png")
