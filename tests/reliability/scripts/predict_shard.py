"""Predict one part of a catalog, as one process of a multi-node prediction (``shard='auto'``).

Usage: python predict_shard.py BACKEND CATALOG.parquet SAVE_LOC [MARKER N_CHUNKS]

The rank and world size come from the environment (RANK/WORLD_SIZE, SLURM_*, TF_CONFIG); without them
the whole catalog is predicted (the single-process reference). The model is the tests' seeded tiny
tree, identical in every process. With MARKER and N_CHUNKS the script creates MARKER once N_CHUNKS
chunks are stored and waits to be SIGKILLed.
"""
import sys

import pandas as pd

from tests.reliability.helpers import (PREDICT_CHUNK_SIZE, PREDICT_OPTIONS, block_after_chunks, keras_tree,
                                       torch_tree, use_chunk_size)


def main(backend, catalog_path, save_loc, marker=None, n_chunks=None):
    from zoobot.shared import prediction_runner
    from zoobot.shared.sharding import shard_from_environment

    if backend == "pytorch":
        import torch

        from zoobot.pytorch.predictions.predict_on_catalog import predict

        torch.set_num_threads(1)
        model = torch_tree()
    else:
        model = keras_tree()
        from zoobot.tensorflow.predictions.predict_on_catalog import predict
    prediction_runner.run_chunked_prediction = use_chunk_size(prediction_runner, PREDICT_CHUNK_SIZE)
    if marker is not None:
        block_after_chunks(prediction_runner, int(n_chunks), marker)
    shard = "auto" if shard_from_environment() is not None else None
    predict(pd.read_parquet(catalog_path), model, save_loc=save_loc, test_time_dropout=False,
            datamodule_kwargs=PREDICT_OPTIONS, shard=shard)
    if marker is not None:
        raise SystemExit("prediction finished without reaching the kill point")


if __name__ == "__main__":
    main(*sys.argv[1:])
