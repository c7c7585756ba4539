"""representations.ZoobotEncoder and get_representations (api.md 2.6, 4.4): features keyed by id_str from an
encoder, a ZoobotTree, a checkpoint file or a pretrained name (offline, from a fake local Hub cache)."""
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from tests.pytorch.hub_cache import TINY_REPO, fake_hf_home, offline_hub, saved_state_dict  # noqa: F401
from zoobot.pytorch.datasets import GalaxyDataModule
from zoobot.pytorch.estimators.define_model import ZoobotTree, get_pytorch_encoder
from zoobot.pytorch.training.representations import ZoobotEncoder, get_representations
from zoobot.shared import schemas
from zoobot.shared.errors import ChannelMismatchError

SCHEMA = schemas.decals_dr5_ortho_schema
FAST = {"num_workers": 0, "resize_after_crop": 32}


def eval_images(catalog, channels, size=32):
    datamodule = GalaxyDataModule(None, predict_catalog=catalog, greyscale=channels == 1, resize_after_crop=size,
                                  num_workers=0)
    datamodule.setup("predict")
    return torch.stack([datamodule.predict_dataset[i] for i in range(len(catalog))])


@pytest.fixture(scope="module")
def tree():
    torch.manual_seed(0)
    return ZoobotTree(output_dim=SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1).eval()


def test_zoobot_encoder_is_the_encoder_with_checks():
    encoder = get_pytorch_encoder("tiny_cnn", channels=3).eval()
    module = ZoobotEncoder(encoder)
    assert (module.channels, module.input_size, module.encoder_dim) == (3, 224, 128)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), encoder(x))
    with pytest.raises(ChannelMismatchError, match=r"C=3 \(NCHW\); got shape \(2, 1, 32, 32\)"):
        module(torch.rand(2, 1, 32, 32))


def test_features_of_a_zoobot_tree_match_its_encoder(tmp_path, votes_catalog, tree):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:10].sample(frac=1, random_state=0)
    table = get_representations(catalog, tree, save_loc=tmp_path / "reps.parquet", batch_size=4,
                                datamodule_kwargs=FAST)
    assert table.columns.tolist() == ["id_str"] + [f"feat_{i}" for i in range(128)]
    assert table["id_str"].tolist() == catalog["id_str"].tolist()
    assert (table.dtypes.iloc[1:] == np.float32).all()
    with torch.no_grad():
        expected = tree.encoder.eval()(eval_images(catalog, channels=1)).numpy()
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "reps.parquet"), table)

    get_representations(catalog, tree, save_loc=tmp_path / "reps.csv", datamodule_kwargs=FAST)
    assert pd.read_csv(tmp_path / "reps.csv", dtype={"id_str": str})["id_str"].tolist() == table["id_str"].tolist()
    with pytest.raises(ValueError, match=r"Unknown representations file extension.*'\.npy'"):
        get_representations(catalog, tree, save_loc=tmp_path / "reps.npy")


def test_features_from_a_checkpoint_file(tmp_path, votes_catalog, tree):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:6]
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(tree)
    trainer.save_checkpoint(tmp_path / "tree.ckpt")
    from_file = get_representations(catalog, str(tmp_path / "tree.ckpt"), datamodule_kwargs=FAST)
    from_model = get_representations(catalog, tree, datamodule_kwargs=FAST)
    pd.testing.assert_frame_equal(from_file, from_model)
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at .*nothing\.ckpt"):
        get_representations(catalog, str(tmp_path / "nothing.ckpt"))


def test_features_from_a_pretrained_name_offline(votes_catalog, offline_hub):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:4]
    table = get_representations(catalog, f"hf-hub:{TINY_REPO}", datamodule_kwargs=FAST)
    encoder = ZoobotEncoder.load_from_name(f"hf-hub:{TINY_REPO}").eval()
    # the weights came from the cache, not a random initialisation
    stored = saved_state_dict(next((offline_hub / "hub").glob("models--zoobot-tests--*/snapshots/*")))
    for key, value in stored.items():
        torch.testing.assert_close(encoder.encoder.state_dict()[key], value)
    with torch.no_grad():
        expected = encoder(eval_images(catalog, channels=encoder.channels)).numpy()
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, rtol=1e-4, atol=1e-5)
