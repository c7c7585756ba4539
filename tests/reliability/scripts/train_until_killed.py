"""TensorFlow: train like the reliability tests' reference run, then block (to be SIGKILLed) mid-epoch.

Usage: python train_until_killed.py CATALOG.parquet SAVE_DIR MARKER EPOCH

After the first training batch of epoch EPOCH the script creates MARKER and waits; the test kills it with
SIGKILL there, half-way through an epoch, as a preempted cluster job would be. (The PyTorch tests fork
their child instead; a process that has started TensorFlow must not fork, hence this fresh interpreter.)
"""
import sys

import pandas as pd

from tests.reliability.helpers import RINGS, TRAIN_RUN, block_forever


def main(catalog_path, save_dir, marker, epoch):
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    import keras

    from zoobot.tensorflow.training.train_with_keras import train

    epoch = int(epoch)

    class BlockMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, current, logs=None):
            self.current = current

        def on_train_batch_end(self, batch, logs=None):
            if self.current == epoch and batch == 0:
                block_forever(marker)

    train(save_dir, RINGS, catalog=pd.read_parquet(catalog_path), extra_callbacks=[BlockMidEpoch()], **TRAIN_RUN)
    raise SystemExit("training finished without reaching the kill point")


if __name__ == "__main__":
    main(*sys.argv[1:])
