"""One run per ``save_dir`` in the Python finetuning API (issue 12 item 4; docs/reliability.md), both backends:
``finetune.get_trainer(save_dir)`` + ``trainer.fit`` into a folder holding another run's checkpoints is refused
(no ``last-v1.ckpt`` / ``epoch=0-v1.ckpt`` siblings), ``overwrite=True`` replaces that run, and a fit given
``ckpt_path`` continues it.

TensorFlow is imported inside the helpers (torchvision must come first; see ``conftest.py``).
"""
import importlib

import numpy as np
import pytest

from .helpers import make_catalog

BACKENDS = [pytest.param("pytorch", marks=pytest.mark.torch), pytest.param("tensorflow", marks=pytest.mark.tf)]


@pytest.fixture(scope="module")
def class_catalog(tmp_path_factory):
    """8 synthetic 32 px pngs with a 0/1 ``label`` (alternating, so both classes occur)."""
    catalog = make_catalog(tmp_path_factory.mktemp("save_dir_pngs"), n_galaxies=8, image_size=32)
    catalog["label"] = np.arange(len(catalog)) % 2
    return catalog


def finetune_once(backend, catalog, save_dir, *, epochs=1, ckpt_path=None, **trainer_kwargs):
    """One finetuning ``fit`` of a tiny_cnn classifier through the Python API; returns the trainer."""
    if backend == "tensorflow":
        import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    datasets = importlib.import_module(f"zoobot.{backend}.datasets")
    finetune = importlib.import_module(f"zoobot.{backend}.training.finetune")
    datamodule = datasets.GalaxyDataModule(["label"], train_catalog=catalog, val_catalog=catalog,
                                           resize_after_crop=32, batch_size=4, num_workers=0, seed=0)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=-1, learning_rate=1e-3,
                                                  seed=0)
    trainer = finetune.get_trainer(save_dir, max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                                   **trainer_kwargs)
    trainer.fit(model, datamodule, ckpt_path=ckpt_path)
    return trainer


def names(save_dir) -> list:
    return sorted(path.name for path in (save_dir / "checkpoints").iterdir())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_python_finetune_into_a_used_save_dir_is_refused_and_overwrite_replaces_it(
        backend, class_catalog, tmp_path):
    from zoobot.shared.run_dir import SaveDirInUseError

    save_dir = tmp_path / "run"
    finetune_once(backend, class_catalog, save_dir)
    first = names(save_dir)
    last = first[[name.startswith("last.") for name in first].index(True)]
    assert len(first) == 2, first  # the best epoch's file and last.*

    with pytest.raises(SaveDirInUseError, match=r"already holds the checkpoints of another run .*overwrite=True.*"
                                                r"ckpt_path=.*" + last):
        finetune_once(backend, class_catalog, save_dir)
    assert names(save_dir) == first  # no last-v1 / epoch=0-v1 sibling

    before = (save_dir / "checkpoints" / last).stat().st_mtime_ns
    finetune_once(backend, class_catalog, save_dir, overwrite=True)
    assert names(save_dir) == first  # replaced, not versioned
    assert (save_dir / "checkpoints" / last).stat().st_mtime_ns != before


@pytest.mark.torch
def test_a_python_finetune_given_ckpt_path_continues_the_run_in_its_save_dir(class_catalog, tmp_path):
    save_dir = tmp_path / "run"
    finetune_once("pytorch", class_catalog, save_dir)
    finetune_once("pytorch", class_catalog, save_dir, epochs=2, ckpt_path=str(save_dir / "checkpoints" / "last.ckpt"))
    assert all("-v" not in name for name in names(save_dir)), names(save_dir)
    import torch

    assert torch.load(save_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
