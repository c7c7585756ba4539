"""Frozen-encoder finetuning fast paths: feature replay (each train/val row encoded once per fit, later epochs
read no image) and channels_last encoders. Real jpgs in tmp folders, tiny_cnn, 2-3 epochs."""
import copy
import logging
import shutil

import numpy as np
import pytest
import torch

from zoobot.pytorch.datasets import galaxy_dataset
from zoobot.pytorch.datasets.galaxy_datamodule import GalaxyDataModule
from zoobot.pytorch.datasets.galaxy_dataset import GalaxyDataset
from zoobot.pytorch.datasets.transforms import CustomTransform, EvalTransform, TrainTransform, image_to_tensor
from zoobot.pytorch.training import finetune
from zoobot.pytorch.training.feature_cache import is_deterministic_transform
from zoobot.shared.images import load_image

QUIET = dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, logger=False)
SIZE = 32
N_TRAIN, N_VAL = 20, 8
READS_PER_EPOCH = N_TRAIN // 8 * 8 + N_VAL  # batch 8, the last partial training batch dropped


@pytest.fixture(scope="module")
def ring_jpgs(tmp_path_factory):
    """28 synthetic 40 px RGB jpgs with a binary ``ring`` label: (train_catalog, val_catalog)."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("replay_jpgs")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=N_TRAIN + N_VAL, image_size=40, channels=3, label="ring",
                                        seed=3, file_format="jpg", progress=False)
    catalog = catalog.reset_index(drop=True)
    return catalog.iloc[:N_TRAIN].reset_index(drop=True), catalog.iloc[N_TRAIN:].reset_index(drop=True)


def _datamodule(ring_jpgs, train_transform="eval", num_workers=0):
    train, val = ring_jpgs
    if train_transform == "eval":
        train_transform = EvalTransform(channels=3, resize_after_crop=SIZE)
    return GalaxyDataModule(["ring"], train_catalog=train, val_catalog=val, resize_after_crop=SIZE, batch_size=8,
                            num_workers=num_workers, train_transform=train_transform)


def _model(**kwargs):
    return finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=0, learning_rate=0.01,
                                                 seed=1, **kwargs)


class _Reads:
    """Counts image loads by GalaxyDataset (calls through to the real loader)."""

    def __init__(self, monkeypatch):
        self.n = 0

        def counting_load_image(*args, **kwargs):
            self.n += 1
            return load_image(*args, **kwargs)

        monkeypatch.setattr(galaxy_dataset, "load_image", counting_load_image)


class _Phases(finetune.L.Callback):
    """Image reads per phase, losses per epoch, and the replayed features seen at the first epoch start."""

    def __init__(self, reads, datamodule):
        self.reads, self.datamodule = reads, datamodule
        self.at_epoch_start, self.per_epoch, self.train_loss, self.val_loss = [], [], [], []
        self.features = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.at_epoch_start.append(self.reads.n)
        if self.features is None and self.datamodule.train_dataset.features_mode:
            self.features = {"train": self.datamodule.train_dataset.features.clone(),
                             "val": self.datamodule.val_dataset.features.clone()}

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_loss.append(float(trainer.callback_metrics["finetuning/val_loss"]))
            self.per_epoch.append(self.reads.n - self.at_epoch_start[-1])  # train + val of this epoch

    def on_train_epoch_end(self, trainer, pl_module):
        self.train_loss.append(float(trainer.callback_metrics["finetuning/train_loss"]))


def _fit(tmp_path, monkeypatch, ring_jpgs, epochs=2, cache_features=None, train_transform="eval", **trainer_kwargs):
    reads = _Reads(monkeypatch)
    datamodule = _datamodule(ring_jpgs, train_transform)
    model = _model(cache_features=cache_features)
    phases = _Phases(reads, datamodule)
    trainer = finetune.get_trainer(tmp_path, max_epochs=epochs, callbacks=[phases], **{**QUIET, **trainer_kwargs})
    trainer.fit(model, datamodule)
    return model, datamodule, phases, reads


def test_replay_reads_every_image_once_and_gives_the_encoder_features(tmp_path, monkeypatch, ring_jpgs, caplog):
    with caplog.at_level(logging.INFO, logger="zoobot.pytorch.training.finetune"):
        model, datamodule, phases, reads = _fit(tmp_path, monkeypatch, ring_jpgs, epochs=3)
    # (a) every train and val row read exactly once, before the first epoch; no epoch (nor the sanity check) reads
    assert phases.at_epoch_start[0] == N_TRAIN + N_VAL
    assert phases.per_epoch == [0, 0, 0] and phases.at_epoch_start == [N_TRAIN + N_VAL] * 3
    assert f"feature replay: {N_TRAIN} train + {N_VAL} val rows encoded once" in caplog.text
    # (b) the replayed features are the frozen encoder's output on the EvalTransform of each file
    transform = EvalTransform(channels=3, resize_after_crop=SIZE)
    for stage, catalog in zip(("train", "val"), ring_jpgs):
        images = torch.stack([transform(load_image(f)) for f in catalog["file_loc"]])
        with torch.no_grad():
            expected = model.eval().encoder(images)
        assert phases.features[stage].shape == (len(catalog), model.encoder_dim)
        torch.testing.assert_close(phases.features[stage], expected, rtol=1e-4, atol=1e-5)
    # (e) after fit the datasets serve images again (test/predict read files)
    assert not datamodule.train_dataset.features_mode and not datamodule.val_dataset.features_mode
    before = reads.n
    image, label = datamodule.train_dataset[3]
    assert reads.n == before + 1 and image.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(image, transform(load_image(ring_jpgs[0]["file_loc"][3])))
    assert not model.feature_replay.stages


def test_replay_trains_exactly_like_reading_images(tmp_path, monkeypatch, ring_jpgs):
    fast, _, fast_phases, _ = _fit(tmp_path / "fast", monkeypatch, ring_jpgs, epochs=2)
    slow, _, slow_phases, _ = _fit(tmp_path / "slow", monkeypatch, ring_jpgs, epochs=2, cache_features=False)
    assert slow_phases.per_epoch == [READS_PER_EPOCH] * 2  # the counter does see reads when images are read
    assert fast_phases.per_epoch == [0, 0]
    # same seed, same EpochSeededRandomSampler order, same dropout draws: the same head, to float tolerance
    np.testing.assert_allclose(fast_phases.train_loss, slow_phases.train_loss, rtol=1e-5)
    np.testing.assert_allclose(fast_phases.val_loss, slow_phases.val_loss, rtol=1e-5)
    for key, value in slow.head.state_dict().items():
        torch.testing.assert_close(fast.head.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fast.head.linear.weight, _model().head.linear.weight)  # it did train


@pytest.mark.parametrize("train_transform", [None, "user_callable"], ids=["default_TrainTransform", "user_callable"])
def test_random_or_unknown_train_transform_never_replays(tmp_path, monkeypatch, ring_jpgs, train_transform, caplog):
    if train_transform == "user_callable":
        evaluate = EvalTransform(channels=3, resize_after_crop=SIZE)
        train_transform = lambda image: evaluate(image)  # noqa: E731 - deterministic, but zoobot cannot know
    with caplog.at_level(logging.INFO, logger="zoobot.pytorch.training.finetune"):
        model, datamodule, phases, _ = _fit(tmp_path, monkeypatch, ring_jpgs, epochs=2, train_transform=train_transform)
    assert phases.features is None and not model.feature_replay.stages
    assert all(n >= READS_PER_EPOCH for n in phases.per_epoch)  # every image read in every epoch
    assert "feature replay not used: the training transform" in caplog.text


def test_replay_skipped_when_over_the_memory_cap(tmp_path, monkeypatch, ring_jpgs, caplog):
    model = _model()
    model.feature_cache.max_bytes = (N_TRAIN + N_VAL) * model.encoder_dim * 4 - 1
    reads = _Reads(monkeypatch)
    datamodule = _datamodule(ring_jpgs)
    with caplog.at_level(logging.INFO, logger="zoobot.pytorch.training.finetune"):
        finetune.get_trainer(tmp_path, max_epochs=1, **QUIET).fit(model, datamodule)
    assert "more than the cache's max_bytes" in caplog.text
    assert reads.n >= N_TRAIN + N_VAL and not datamodule.train_dataset.features_mode


def test_replay_with_persistent_workers_reads_no_file_after_the_first_pass(tmp_path, ring_jpgs):
    """Loader workers (persistent by default) start after the switch: later epochs survive the files vanishing."""
    train, val = (c.copy() for c in ring_jpgs)
    folder = tmp_path / "images"
    folder.mkdir()
    for catalog in (train, val):
        for i, f in enumerate(catalog["file_loc"]):
            catalog.loc[i, "file_loc"] = shutil.copy(f, folder)
    datamodule = _datamodule((train, val), num_workers=1)

    class RemoveImages(finetune.L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                shutil.rmtree(folder)

    model = _model()
    finetune.get_trainer(tmp_path / "run", max_epochs=2, callbacks=[RemoveImages()], **QUIET).fit(model, datamodule)
    assert not folder.exists() and model.trainer.current_epoch == 2


def test_a_failed_fit_restores_the_images(tmp_path, monkeypatch, ring_jpgs):
    class Fail(finetune.L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            assert trainer.datamodule.train_dataset.features_mode  # replaying while training
            raise RuntimeError("stop here")

    datamodule = _datamodule(ring_jpgs)
    trainer = finetune.get_trainer(tmp_path, max_epochs=2, callbacks=[Fail()], **QUIET)
    with pytest.raises(RuntimeError, match="stop here"):
        trainer.fit(_model(), datamodule)
    assert not datamodule.train_dataset.features_mode and not datamodule.val_dataset.features_mode
    assert datamodule.val_dataset[0][0].shape == (3, SIZE, SIZE)


def test_deterministic_transforms_and_feature_mode_errors(ring_jpgs):
    evaluate = EvalTransform(channels=1, resize_after_crop=SIZE)
    assert is_deterministic_transform(None) and is_deterministic_transform(image_to_tensor)
    assert is_deterministic_transform(evaluate) and is_deterministic_transform(CustomTransform(evaluate, "array"))
    assert not is_deterministic_transform(TrainTransform(channels=1, resize_after_crop=SIZE))
    assert not is_deterministic_transform(CustomTransform(lambda image: evaluate(image), "array"))
    dataset = GalaxyDataset(ring_jpgs[0], ["ring"], evaluate)
    with pytest.raises(ValueError, match=f"one feature row per catalog row \\({N_TRAIN}\\)"):
        dataset.use_features(torch.zeros(N_TRAIN - 1, 4))
    dataset.use_features(torch.arange(N_TRAIN * 2, dtype=torch.float32).reshape(N_TRAIN, 2))
    features, label = dataset[5]
    assert features.tolist() == [10.0, 11.0] and float(label) == float(ring_jpgs[0]["ring"][5])


# ---------------------------------------------------------------------------------------------
# channels_last
# ---------------------------------------------------------------------------------------------

def test_channels_last_encoder_gives_the_nchw_outputs():
    model = _model().eval()
    assert model.channels_last
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    nchw = copy.deepcopy(model)
    nchw.encoder.to(memory_format=torch.contiguous_format)
    nchw.channels_last = False
    assert all(m.weight.is_contiguous() for m in nchw.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), nchw(x), rtol=1e-5, atol=1e-5)
    # state dicts do not depend on the layout: an NCHW copy loads the channels_last weights exactly
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), nchw.state_dict().values()))
    # an encoder with fewer than three spatial convolutions is left in NCHW (as in ZoobotTree)
    shallow = torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert not finetune.FinetuneableZoobotClassifier(encoder=shallow, encoder_dim=5, num_classes=2).channels_last
    assert shallow[0].weight.is_contiguous()
