"""TensorFlow: predict a catalog in small chunks, then block (to be SIGKILLed) after some chunks are written.

Usage: python predict_until_killed.py CATALOG.parquet MODEL.keras SAVE_LOC MARKER N_CHUNKS

After N_CHUNKS finished chunks are in ``SAVE_LOC.partial/`` the script creates MARKER and waits to be
killed. (The PyTorch tests fork their child instead; a process that has started TensorFlow must not fork.)
"""
import sys

import pandas as pd

from tests.reliability.helpers import PREDICT_CHUNK_SIZE, PREDICT_OPTIONS, block_after_chunks, use_chunk_size


def main(catalog_path, model_path, save_loc, marker, n_chunks):
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    from zoobot.shared import prediction_runner
    from zoobot.tensorflow.estimators.define_model import load_zoobot_model
    from zoobot.tensorflow.predictions.predict_on_catalog import predict

    prediction_runner.run_chunked_prediction = use_chunk_size(prediction_runner, PREDICT_CHUNK_SIZE)
    block_after_chunks(prediction_runner, int(n_chunks), marker)
    predict(pd.read_parquet(catalog_path), load_zoobot_model(model_path), save_loc=save_loc, test_time_dropout=False,
            datamodule_kwargs=PREDICT_OPTIONS)
    raise SystemExit("prediction finished without reaching the kill point")


if __name__ == "__main__":
    main(*sys.argv[1:])
