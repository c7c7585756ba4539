"""zoobot.onnx with neither framework (issue 16.2): the files, failures, resumable chunks and shards of the
shared prediction runner, and a subprocess proving that nothing imports PyTorch or TensorFlow.

Runs in an environment with only ``pip install -e .[onnx]`` (the .ci/run step) on the committed
``tests/fixtures/onnx_zoobot_tree_tiny_cnn_32px.onnx``: ``export_onnx`` of
``pytorch_zoobot_tree_tiny_cnn_32px.ckpt.gz`` (test_pytorch_export.py checks the two still agree).
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from zoobot.onnx import OnnxModel, get_representations, predict
from zoobot.shared.errors import ImageLoadError
from zoobot.shared.load_predictions import load
from zoobot.shared.prediction_runner import partial_dir

MODEL = pathlib.Path(__file__).parents[1] / "fixtures" / "onnx_zoobot_tree_tiny_cnn_32px.onnx"
FRAMEWORKS = ("torch", "torchvision", "lightning", "tensorflow", "keras", "jax")


@pytest.fixture()
def broken_catalog(jpg_catalog, tmp_path):
    """12 galaxies; row 9's jpg is truncated."""
    catalog = jpg_catalog.iloc[:12].copy()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(pathlib.Path(catalog["file_loc"].iloc[9]).read_bytes()[:50])
    catalog.loc[catalog.index[9], "file_loc"] = str(bad)
    return catalog.reset_index(drop=True)


def test_fixture_model_describes_itself():
    model = OnnxModel(MODEL)
    assert model.metadata["zoobot_model_class"] == "ZoobotTree" and model.kind == "tree"
    assert model.schema is not None and model.label_cols == model.schema.label_cols
    assert (model.channels, model.input_size, model.layout) == (1, 32, "NCHW")


def test_failed_image_is_a_nan_row_listed_in_the_failures_file(broken_catalog, tmp_path):
    save_loc = tmp_path / "preds.parquet"
    with pytest.warns(UserWarning, match="1 of 12 images could not be read"):
        predictions = predict(broken_catalog, MODEL, n_samples=2, save_loc=save_loc, batch_size=4)
    assert np.isnan(predictions[9]).all() and not np.isnan(np.delete(predictions, 9, axis=0)).any()
    failures = pd.read_csv(tmp_path / "preds_failures.csv")
    assert failures["id_str"].tolist() == [broken_catalog["id_str"].iloc[9]]
    assert "broken.jpg" in failures["file_loc"].iloc[0]
    ids, loaded, label_cols, metadata = load(save_loc)
    assert ids["id_str"].tolist() == broken_catalog["id_str"].tolist()
    np.testing.assert_array_equal(loaded, predictions)
    assert metadata["backend"] == "onnx" and metadata["n_samples"] == 2
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        predict(broken_catalog, MODEL, on_bad_image="raise")


def test_resume_reuses_the_finished_chunks(broken_catalog, tmp_path):
    """A run stopped by the bad image at row 9 keeps chunks 0-1 (rows 0-7); the rerun takes them over."""
    save_loc = tmp_path / "preds.parquet"
    options = dict(save_loc=save_loc, chunk_size=4, batch_size=4, num_workers=0, test_time_dropout=False)
    with pytest.raises(ImageLoadError):
        predict(broken_catalog, MODEL, on_bad_image="raise", **options)
    chunk = partial_dir(save_loc) / "chunk_000000.npz"
    assert chunk.exists() and not (partial_dir(save_loc) / "chunk_000002.npz").exists()
    # mark the stored chunk: if the rerun reuses it, its rows come back as the marker
    with np.load(chunk) as stored:
        contents = {k: stored[k] for k in stored.files}
    contents["predictions"] = np.full_like(contents["predictions"], 7.0)
    with open(chunk, "wb") as f:
        np.savez(f, **contents)
    with pytest.warns(UserWarning, match="could not be read"):
        resumed = predict(broken_catalog, MODEL, **options)
    assert np.all(resumed[:4] == 7.0)
    with pytest.warns(UserWarning, match="could not be read"):
        fresh = predict(broken_catalog, MODEL, **{**options, "save_loc": tmp_path / "fresh.parquet"})
    np.testing.assert_array_equal(resumed[4:], fresh[4:])
    assert not partial_dir(save_loc).exists()


def test_shards_merge_to_the_whole_catalog(jpg_catalog, tmp_path):
    from zoobot.shared.sharding import merge_parts

    save_loc = tmp_path / "preds.parquet"
    whole = predict(jpg_catalog, MODEL, test_time_dropout=False)
    for rank in range(2):
        predict(jpg_catalog, MODEL, test_time_dropout=False, save_loc=save_loc, shard=(rank, 2))
    merge_parts(save_loc)
    ids, merged, _, _ = load(save_loc)
    order = pd.Index(ids["id_str"]).get_indexer(jpg_catalog["id_str"])
    np.testing.assert_allclose(merged[order], whole, rtol=1e-6)


def test_mc_dropout_follows_the_model_and_the_seed(jpg_catalog):
    catalog = jpg_catalog.iloc[:4]
    samples = predict(catalog, MODEL, n_samples=5, seed=1)  # the fixture samples by default
    assert np.all(np.ptp(samples, axis=2) > 0)
    np.testing.assert_array_equal(predict(catalog, MODEL, n_samples=5, seed=1), samples)
    fixed = predict(catalog, MODEL, n_samples=3, test_time_dropout=False)
    assert np.all(np.ptp(fixed, axis=2) == 0)


def test_representations_are_the_features_output(jpg_catalog, tmp_path):
    from zoobot.onnx.images import ImagePlan, prepare_image

    table = get_representations(jpg_catalog, MODEL, save_loc=tmp_path / "reps.csv", batch_size=5)
    assert table.columns.tolist() == ["id_str"] + [f"feat_{i}" for i in range(128)]
    model = OnnxModel(MODEL)
    image = prepare_image(jpg_catalog["file_loc"].iloc[2], ImagePlan(1, 32))[None]
    np.testing.assert_allclose(table.iloc[2, 1:].to_numpy(dtype=np.float32), model.features(image)[0], rtol=1e-5)
    assert pd.read_csv(tmp_path / "reps.csv")["id_str"].astype(str).tolist() == table["id_str"].tolist()


def test_bad_arguments_fail_before_any_image_is_read(jpg_catalog, tmp_path):
    with pytest.raises(ValueError, match="expected width 34, got width 2"):
        predict(jpg_catalog, MODEL, label_cols=["a", "b"])
    with pytest.raises(FileNotFoundError, match="No ONNX model"):
        predict(jpg_catalog, tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="path of an .onnx file"):
        predict(jpg_catalog, object())
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        predict(jpg_catalog, MODEL, n_samples=0)
    with pytest.raises(ValueError, match=r"\.txt"):
        predict(jpg_catalog, MODEL, save_loc=tmp_path / "preds.txt")


def test_reads_with_threads_or_inline_alike(jpg_catalog):
    inline = predict(jpg_catalog, MODEL, test_time_dropout=False, num_workers=0, batch_size=3)
    threads = predict(jpg_catalog, MODEL, test_time_dropout=False, num_workers=3, batch_size=5)
    np.testing.assert_array_equal(inline, threads)


def test_predicting_imports_neither_framework(jpg_catalog, tmp_path):
    """In a fresh interpreter: zoobot.onnx and `zoobot predict --model X.onnx` never import a framework."""
    catalog_path = tmp_path / "catalog.csv"
    jpg_catalog.to_csv(catalog_path, index=False)
    script = textwrap.dedent(f"""
        import sys
        import pandas as pd
        from zoobot.onnx import predict, get_representations
        catalog = pd.read_csv({str(catalog_path)!r})
        predict(catalog, {str(MODEL)!r}, n_samples=2, save_loc={str(tmp_path / 'a.parquet')!r})
        get_representations(catalog, {str(MODEL)!r})
        from zoobot.cli import main
        try:
            main(['predict', '--catalog', {str(catalog_path)!r}, '--model', {str(MODEL)!r},
                  '--save-loc', {str(tmp_path / 'b.parquet')!r}, '--n-samples', '2', '--summary'])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        try:
            main(['representations', '--catalog', {str(catalog_path)!r}, '--model', {str(MODEL)!r},
                  '--save-loc', {str(tmp_path / 'reps.parquet')!r}])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))
    """)
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", "import json\n" + script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "a.parquet").exists() and (tmp_path / "b.parquet").exists()
    assert (tmp_path / "b_friendly.parquet").exists()
    reps = pd.read_parquet(tmp_path / "reps.parquet")  # the CLI's features equal the Python function's
    np.testing.assert_allclose(reps.filter(like="feat_").to_numpy(),
                               get_representations(jpg_catalog, MODEL).filter(like="feat_").to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(load(tmp_path / "b.parquet")[1].shape, (len(jpg_catalog), 34, 2))


def test_docstring_examples_run():
    import doctest

    from zoobot.onnx import images, metadata, runtime

    for module in (metadata, runtime, images):
        failures, tried = doctest.testmod(module)
        assert failures == 0 and tried > 0, module.__name__
