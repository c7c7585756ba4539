"""One run per ``save_dir`` in the Python finetuning API (issue 12 item 4; docs/reliability.md), both backends:
``finetune.get_trainer(save_dir)`` + ``trainer.fit`` into a folder holding another run's checkpoints is refused
(no ``last-v1.ckpt`` / ``epoch=0-v1.ckpt`` siblings), ``overwrite=True`` replaces that run, and a fit given
``ckpt_path`` continues it.

TensorFlow is imported inside the helpers (torchvision must come first; see ``conftest.py``).
"""
import importlib
import pathlib

import numpy as np
import pytest

from .helpers import make_catalog
from .test_honest_runs import checkpoint_names as names

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


def weights(backend, model) -> list:
    if backend == "pytorch":
        return [value.detach().numpy() for value in model.state_dict().values()]
    return [np.asarray(variable) for variable in model.weights]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_python_finetune_given_ckpt_path_resumes_to_the_weights_of_an_uninterrupted_one(
        backend, class_catalog, tmp_path):
    """A run stopped after 1 of 3 epochs, continued with ``fit(ckpt_path=last)`` in its save_dir, ends with the
    weights of an uninterrupted 3-epoch run (exactly, on the CPU); metrics.csv holds each epoch once (TensorFlow:
    before, a TensorFlow fit could not resume at all)."""
    last = "last.ckpt" if backend == "pytorch" else "last.keras"
    whole = finetune_once(backend, class_catalog, tmp_path / "whole", epochs=3)
    stopped = tmp_path / "stopped"
    finetune_once(backend, class_catalog, stopped, epochs=1)
    resumed = finetune_once(backend, class_catalog, stopped, epochs=3, ckpt_path=str(stopped / "checkpoints" / last))
    assert all("-v" not in name for name in names(stopped)), names(stopped)
    for expected, got in zip(weights(backend, whole.model if backend == "tensorflow" else whole.lightning_module),
                             weights(backend, resumed.model if backend == "tensorflow" else resumed.lightning_module)):
        np.testing.assert_array_equal(got, expected)
    if backend == "tensorflow":
        import pandas as pd

        assert pd.read_csv(stopped / "logs" / "metrics.csv")["epoch"].tolist() == [0, 1, 2]
        best = [pathlib.Path(trainer.checkpoint_callback.best_model_path) for trainer in (whole, resumed)]
        assert best[1].parent == stopped / "checkpoints" and best[1].name == best[0].name  # the restored best-k state
