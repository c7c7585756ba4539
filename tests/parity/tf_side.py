"""Compute the TensorFlow backend's facts (``tests/parity/facts.py``) in a fresh process.

Usage: python tests/parity/tf_side.py CATALOG.parquet OUT_FOLDER  ->  OUT_FOLDER/facts.json
"""
import json
import pathlib
import sys

import pandas as pd


def main(catalog_path, out_folder):
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    import keras

    from tests.parity.facts import all_facts

    keras.utils.set_random_seed(0)
    out = pathlib.Path(out_folder)
    facts = all_facts("tensorflow", pd.read_parquet(catalog_path), out / "files")
    (out / "facts.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main(*sys.argv[1:])
