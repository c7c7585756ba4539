"""Predict a catalog in small chunks, then block (to be SIGKILLed) after some chunks are written.

Usage: python predict_until_killed.py {pytorch|tensorflow} CATALOG.parquet MODEL SAVE_LOC MARKER N_CHUNKS

MODEL is a PyTorch state_dict (.pt) of the tests' tiny ZoobotTree, or a .keras file. After N_CHUNKS
finished chunks are in ``SAVE_LOC.partial/`` the script creates MARKER and waits to be killed.
"""
import sys

import pandas as pd

from tests.reliability.helpers import (PREDICT_CHUNK_SIZE, PREDICT_OPTIONS, block_after_chunks, torch_tree,
                                      use_chunk_size)


def main(backend, catalog_path, model_path, save_loc, marker, n_chunks):
    from zoobot.shared import prediction_runner

    catalog = pd.read_parquet(catalog_path)
    prediction_runner.run_chunked_prediction = use_chunk_size(prediction_runner, PREDICT_CHUNK_SIZE)
    block_after_chunks(prediction_runner, int(n_chunks), marker)
    if backend == "pytorch":
        import torch

        torch.set_num_threads(1)
        from zoobot.pytorch.predictions.predict_on_catalog import predict

        model = torch_tree()
        model.load_state_dict(torch.load(model_path, weights_only=True))
    else:
        import zoobot.tensorflow  # noqa: F401
        from zoobot.tensorflow.estimators.define_model import load_zoobot_model
        from zoobot.tensorflow.predictions.predict_on_catalog import predict

        model = load_zoobot_model(model_path)
    predict(catalog, model, save_loc=save_loc, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS)
    raise SystemExit("prediction finished without reaching the kill point")


if __name__ == "__main__":
    main(*sys.argv[1:])
