"""Train like the reliability tests' uninterrupted run, then block (to be SIGKILLed) mid-epoch.

Usage: python train_until_killed.py {pytorch|tensorflow} CATALOG.parquet SAVE_DIR MARKER EPOCH

After the first training batch of epoch EPOCH the script creates MARKER and waits; the test kills it
with SIGKILL there, half-way through an epoch, as a preempted cluster job would be.
"""
import sys

import pandas as pd

from tests.reliability.helpers import RINGS, TRAIN_RUN, block_forever


def main(backend, catalog_path, save_dir, marker, epoch):
    catalog = pd.read_parquet(catalog_path)
    epoch = int(epoch)
    if backend == "pytorch":
        import torch

        torch.set_num_threads(1)
        import lightning as L

        from zoobot.pytorch.training.train_with_pytorch_lightning import train

        class BlockMidEpoch(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.current_epoch == epoch and batch_idx == 0:
                    block_forever(marker)
    else:
        import zoobot.tensorflow  # noqa: F401
        import keras

        from zoobot.tensorflow.training.train_with_keras import train

        class BlockMidEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, current, logs=None):
                self.current = current

            def on_train_batch_end(self, batch, logs=None):
                if self.current == epoch and batch == 0:
                    block_forever(marker)

    train(save_dir, RINGS, catalog=catalog, extra_callbacks=[BlockMidEpoch()], **TRAIN_RUN)
    raise SystemExit("training finished without reaching the kill point")


if __name__ == "__main__":
    main(*sys.argv[1:])
