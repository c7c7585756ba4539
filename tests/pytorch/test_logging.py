"""TensorBoard logging of a PyTorch finetune (the ``[logging]`` extra installs tensorboard)."""
import pytest

pytestmark = pytest.mark.torch


def test_tensorboard_logger_records_the_finetuning_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="the [logging] extra installs tensorboard")
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zoobot.pytorch.training import finetune

    torch.manual_seed(0)
    x = torch.rand(32, 3, 32, 32)
    y = torch.randint(0, 2, (32,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=-1, learning_rate=1e-3)
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    trainer = finetune.get_trainer(tmp_path / "run", accelerator="cpu", max_epochs=2, logger=logger,
                                   enable_progress_bar=False)
    trainer.fit(model, loader, loader)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"finetuning/val_loss", "finetuning/val_acc", "finetuning/train_loss"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("finetuning/val_loss")) == 2
