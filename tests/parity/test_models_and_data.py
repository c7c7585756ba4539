"""Same model sizes, same splits, same prediction files in both backends (issue 5): tiny_cnn and a tiny_cnn
ZoobotTree have the same number of trainable parameters; the same catalog gives the same train/val/test
splits in both GalaxyDataModules; ``predict`` writes the same columns, datasets and metadata keys."""
import pytest

from zoobot.shared import schemas

from . import facts

pytestmark = [pytest.mark.torch, pytest.mark.tf]


def test_trainable_parameter_counts_are_equal(tf_facts):
    ours = facts.model_facts("pytorch")
    # tiny_cnn: 4 conv blocks C->16->32->64->128 (3x3, no bias) + BatchNorm gamma/beta
    assert ours["tiny_cnn_1"] == 9 * (1 * 16 + 16 * 32 + 32 * 64 + 64 * 128) + 2 * (16 + 32 + 64 + 128)
    assert ours["dirichlet_head"] == 128 * 34 + 34
    assert ours == tf_facts["models"]


def test_train_builds_the_same_efficientnet_batchnorm(tf_facts):
    """train()'s efficientnet_b0 has the same BatchNorm layers in both backends: 49, momentum 0.1 in PyTorch's
    convention (Keras 0.9), epsilon 1e-3 (Keras's; timm's default would be 1e-5)."""
    assert facts.train_batchnorm_facts("pytorch") == tf_facts["train_batchnorm"] == [[0.1, 0.001, 49]]


def test_the_same_catalog_gives_the_same_splits(parity_catalog, tf_facts):
    catalog, _ = parity_catalog
    ours = facts.split_facts("pytorch", catalog)
    assert ours == tf_facts["splits"]
    for splits in ours.values():
        assert sorted(sum(splits.values(), [])) == sorted(catalog["id_str"])  # every galaxy in exactly one split


def test_prediction_files_have_the_same_layout(parity_catalog, tf_facts, tmp_path):
    catalog, _ = parity_catalog
    ours, theirs = facts.prediction_layout("pytorch", catalog, tmp_path), tf_facts["prediction_files"]
    schema = schemas.get_schema(facts.SCHEMA_NAME)
    first = schema.label_cols[0]
    assert ours["tree_parquet_columns"][:4] == ["id_str", f"{first}_concentration_0", f"{first}_concentration_1",
                                                f"{first}_fraction"]
    for key in ("tree_parquet_columns", "classifier_parquet_columns", "tree_csv_columns", "tree_hdf5_datasets",
                "tree_hdf5_attrs", "tree_hdf5_shape", "failures_columns", "failures_ids"):
        assert ours[key] == theirs[key], key
    for name in ("tree", "classifier"):
        mine, other = ours[f"{name}_parquet_metadata"], theirs[f"{name}_parquet_metadata"]
        assert sorted(mine) == sorted(other), name
        assert (mine["backend"], other["backend"]) == ("pytorch", "tensorflow")
        differing = {k for k in mine if mine[k] != other[k]}
        assert differing == {"backend"}, (name, {k: (mine[k], other[k]) for k in differing})
