"""Catalog loading, validation (E1-E5, E14 in the documented order) and hash splits."""
import numpy as np
import pandas as pd
import pytest

from zoobot.shared.catalogs import load_catalog, split_catalog, validate_catalog
from zoobot.shared.errors import CatalogError

LABELS = ["q_a", "q_b"]


def make_catalog(tmp_path=None, n=5, make_files=False):
    ids = [f"g{i}" for i in range(n)]
    locs = [str((tmp_path or "") and tmp_path / f"{i}.jpg") if tmp_path else f"{i}.jpg" for i in ids]
    if make_files:
        for loc in locs:
            open(loc, "wb").close()
    return pd.DataFrame({"id_str": ids, "file_loc": locs, "q_a": np.arange(n), "q_b": np.arange(n)[::-1] * 2})


def test_valid_catalog_returns_copy_with_string_ids():
    catalog = make_catalog()
    catalog["id_str"] = range(5)
    out = validate_catalog(catalog, LABELS)
    assert out["id_str"].tolist() == ["0", "1", "2", "3", "4"]
    assert all(isinstance(v, str) for v in out["id_str"])
    assert catalog["id_str"].tolist() == [0, 1, 2, 3, 4]  # the input is not modified


def test_not_a_dataframe_is_type_error():
    with pytest.raises(TypeError, match="catalog must be a pandas DataFrame, got dict"):
        validate_catalog({"id_str": ["a"]})


def test_e1_lists_every_missing_column_present_columns_and_why():
    catalog = make_catalog().drop(columns=["file_loc", "q_b"])
    with pytest.raises(CatalogError, match=r"missing 2 required column\(s\)") as info:
        validate_catalog(catalog, LABELS, label_description="label columns of schema 'tiny'")
    message = str(info.value)
    assert "'file_loc'" in message and "'q_b' (label columns of schema 'tiny')" in message
    assert "Columns present: 'id_str', 'q_a'" in message


def test_e1_missing_id_str_has_hint():
    with pytest.raises(CatalogError, match=r"'id_str'.*astype\(str\)"):
        validate_catalog(make_catalog().drop(columns="id_str"), LABELS)


def test_e1_comes_before_e4():
    empty = make_catalog().iloc[:0]
    with pytest.raises(CatalogError, match="missing 1 required column"):
        validate_catalog(empty.drop(columns="q_a"), LABELS)
    with pytest.raises(CatalogError, match=r"catalog is empty \(0 rows\)"):
        validate_catalog(empty, LABELS)


def test_e3_counts_duplicates_and_shows_them():
    catalog = make_catalog(n=6)
    catalog.loc[[1, 2, 4], "id_str"] = ["g0", "g3", "g3"]
    with pytest.raises(CatalogError, match=r"2 duplicated id_str value\(s\) \(5 rows\), e.g. 'g0', 'g3'"):
        validate_catalog(catalog, LABELS)


def test_numeric_ids_colliding_with_strings_are_duplicates():
    catalog = make_catalog(n=2)
    catalog["id_str"] = pd.Series([7, "7"], dtype=object)
    with pytest.raises(CatalogError, match="duplicated id_str"):
        validate_catalog(catalog, LABELS)


def test_non_numeric_label_is_type_error_naming_column_and_dtype():
    catalog = make_catalog()
    catalog["q_b"] = catalog["q_b"].astype(str)
    with pytest.raises(TypeError, match="label column 'q_b' has dtype (object|str)"):
        validate_catalog(catalog, LABELS)


def test_e2_nan_and_negative_counts_name_columns_rows_ids_and_hint():
    catalog = make_catalog(n=8).astype({"q_a": float})
    catalog.loc[[1, 3], "q_a"] = np.nan
    catalog.loc[5, "q_b"] = -1
    with pytest.raises(CatalogError) as info:
        validate_catalog(catalog, LABELS)
    message = str(info.value)
    assert "'q_a', 'q_b'" in message and "in 3 row(s)" in message
    assert "'g1', 'g3', 'g5'" in message and "Use 0, not NaN, for answers with no votes" in message


def test_e2_inf_for_regression_but_negative_allowed():
    catalog = make_catalog().astype({"q_a": float})
    catalog["q_a"] = -catalog["q_a"]
    validate_catalog(catalog, ["q_a"], label_kind="regression")
    catalog.loc[2, "q_a"] = np.inf
    with pytest.raises(CatalogError, match=r"NaN or inf values in 1 row\(s\), e.g. id_str 'g2'"):
        validate_catalog(catalog, ["q_a"], label_kind="regression")


def test_fractional_counts_warn_once():
    catalog = make_catalog()
    catalog[LABELS] = catalog[LABELS] + 0.5
    with pytest.warns(UserWarning, match=r"vote counts in 5 row\(s\) are not whole numbers") as record:
        validate_catalog(catalog, LABELS)
    assert len(record) == 1


def test_e14_class_labels():
    catalog = make_catalog()
    catalog["label"] = [0, 1, 2, 3, 1]
    with pytest.raises(ValueError, match=r"integers in \[0, 3\) \(num_classes=3\).*1 row\(s\) have 3"):
        validate_catalog(catalog, ["label"], label_kind="class", num_classes=3)
    catalog["label"] = [0, 1, 0.5, -1, 1]
    with pytest.raises(ValueError, match=r"2 row\(s\) have 0.5, -1.0"):
        validate_catalog(catalog, ["label"], label_kind="class")
    catalog["label"] = [0, 1, 1, 0, 1]
    validate_catalog(catalog, ["label"], label_kind="class", num_classes=2)


def test_unknown_label_kind_is_e13():
    with pytest.raises(ValueError, match="Unknown label_kind 'count'"):
        validate_catalog(make_catalog(), LABELS, label_kind="count")


def test_e5_missing_files_count_examples_and_hint(tmp_path):
    catalog = make_catalog(tmp_path, make_files=True)
    validate_catalog(catalog, LABELS, check_valid_paths=True)
    (tmp_path / "g1.jpg").unlink()
    (tmp_path / "g4.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 5 file_loc path\(s\) do not exist") as info:
        validate_catalog(catalog, LABELS, check_valid_paths=True)
    assert "('g1', " in str(info.value) and "check_valid_paths=False" in str(info.value)
    validate_catalog(catalog, LABELS, check_valid_paths=False)


def test_name_appears_in_messages():
    with pytest.raises(CatalogError, match="^val_catalog is empty"):
        validate_catalog(make_catalog().iloc[:0], LABELS, name="val_catalog")


def test_load_catalog_csv_and_parquet_keep_string_ids(tmp_path):
    catalog = make_catalog()
    catalog["id_str"] = ["007", "1", "2", "3", "4"]
    catalog.to_csv(tmp_path / "c.csv", index=False)
    catalog.to_parquet(tmp_path / "c.parquet", index=False)
    for name in ("c.csv", "c.parquet"):
        loaded = load_catalog(tmp_path / name)
        assert loaded["id_str"].tolist() == ["007", "1", "2", "3", "4"]
        pd.testing.assert_frame_equal(loaded[LABELS], catalog[LABELS], check_dtype=False)


def test_load_catalog_numeric_parquet_ids_become_strings(tmp_path):
    pd.DataFrame({"id_str": [10, 20]}).to_parquet(tmp_path / "n.parquet")
    assert load_catalog(tmp_path / "n.parquet")["id_str"].tolist() == ["10", "20"]


def test_load_catalog_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown catalog file extension '.xlsx'.*'.csv', '.parquet'"):
        load_catalog(tmp_path / "c.xlsx")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_catalog(tmp_path / "missing.csv")


# ------------------------------------------------------------------ splits
def id_catalog(n):
    return pd.DataFrame({"id_str": [f"id{i}" for i in range(n)], "x": np.arange(n)})


def test_split_is_deterministic_partition_in_catalog_order():
    catalog = id_catalog(2000)
    first = split_catalog(catalog, seed=3)
    second = split_catalog(catalog, seed=3)
    for a, b in zip(first, second):
        pd.testing.assert_frame_equal(a, b)
    all_ids = sum((s["id_str"].tolist() for s in first), [])
    assert sorted(all_ids) == sorted(catalog["id_str"])
    for part in first:
        assert part["x"].is_monotonic_increasing  # catalog order kept
    sizes = np.array([len(s) for s in first]) / 2000
    assert np.allclose(sizes, [0.7, 0.1, 0.2], atol=0.04)  # binomial scatter is ~0.01


def test_split_depends_on_seed():
    catalog = id_catalog(500)
    assert split_catalog(catalog, seed=1)[0]["id_str"].tolist() != split_catalog(catalog, seed=2)[0]["id_str"].tolist()


def test_appending_rows_moves_no_existing_galaxy():
    catalog = id_catalog(300)
    bigger = pd.concat([catalog.sample(frac=1, random_state=0), id_catalog(900).iloc[300:]])
    before = split_catalog(catalog, seed=5)
    after = split_catalog(bigger, seed=5)
    for small, big in zip(before, after):
        assert set(small["id_str"]) <= set(big["id_str"])


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match=r"must sum to 1, got 0.7 \+ 0.2 \+ 0.2 = 1.1"):
        split_catalog(id_catalog(10), 0.7, 0.2, 0.2)
    with pytest.raises(ValueError, match=r"val_fraction must be >= 0.0, got -0.1"):
        split_catalog(id_catalog(10), 0.9, -0.1, 0.2)


def test_zero_fraction_gives_empty_split_and_empty_requested_split_is_e4():
    train, val, test = split_catalog(id_catalog(50), 0.8, 0.2, 0.0)
    assert len(test) == 0 and len(train) + len(val) == 50
    with pytest.raises(CatalogError, match=r"catalog of 2 galaxies .* empty: train \d, val \d, test \d"):
        split_catalog(id_catalog(2))
    with pytest.raises(CatalogError, match="catalog is empty"):
        split_catalog(id_catalog(0))
    with pytest.raises(CatalogError, match="missing the column 'id_str'"):
        split_catalog(pd.DataFrame({"x": [1]}))


def test_missing_id_is_reported():
    catalog = make_catalog()
    catalog["id_str"] = ["a", None, "c", "d", "e"]
    with pytest.raises(CatalogError, match=r"1 row\(s\) with a missing id_str \(index 1\)"):
        validate_catalog(catalog, LABELS)
