"""Helpers of the reliability suite: tiny catalogs, broken image files, subprocess control.

Framework-free (numpy, pandas, PIL, astropy): both backends' test files use them.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from zoobot.shared import schemas

HERE = pathlib.Path(__file__).parent
SCRIPTS = HERE / "scripts"
#: Two answers: the smallest tree, so heads and losses cost nothing next to the encoder.
RINGS = schemas.gz_rings_schema


# ---------------------------------------------------------------------------------------------- catalogs

def make_catalog(root, n_galaxies=20, seed=5, image_size=32, file_format="png"):
    """Synthetic galaxies with ring_yes/ring_no vote counts (schema gz_rings), written under ``root``."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    catalog, _ = make_synthetic_catalog(root, n_galaxies=n_galaxies, schema=RINGS, image_size=image_size,
                                        channels=3, label="votes", seed=seed, file_format=file_format,
                                        progress=False)
    return catalog[["id_str", "file_loc", *RINGS.label_cols]].copy()


# ---------------------------------------------------------------------------------------------- broken files

#: kind -> (error class name, fragment of the message) for each broken file of :func:`write_broken_images`.
BROKEN = {
    "truncated_jpg": ("ImageLoadError", ""),
    "empty_jpg": ("ImageLoadError", ""),
    "two_channel_fits": ("ChannelMismatchError", "C=2"),
    "no_data_fits": ("ImageLoadError", "holds image data"),
    "nan_fits": ("ImageLoadError", "NaN"),
    "missing_png": ("ImageLoadError", "no such file"),
}
#: Readable oddities: kind -> the plain file holding the same pixels.
ODD_BUT_READABLE = {"rgba_png": "rgb_twin_png", "la_png": "grey_twin_png"}


def write_broken_images(folder, good_image: np.ndarray) -> dict:
    """Write one file of each fault (and the readable oddities with their plain twins) into ``folder``.

    Returns ``{kind: path}``; ``missing_png`` is a path that does not exist.
    """
    from astropy.io import fits
    from PIL import Image

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(good_image, dtype=np.uint8)[:, :, :3]
    paths = {}

    whole = folder / "whole.jpg"
    Image.fromarray(rgb).save(whole, quality=95)
    data = whole.read_bytes()
    paths["truncated_jpg"] = folder / "truncated.jpg"
    paths["truncated_jpg"].write_bytes(data[: len(data) // 2])
    whole.unlink()
    paths["empty_jpg"] = folder / "empty.jpg"
    paths["empty_jpg"].write_bytes(b"")

    alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
    paths["rgba_png"] = folder / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(paths["rgba_png"])
    paths["rgb_twin_png"] = folder / "rgb_twin.png"
    Image.fromarray(rgb).save(paths["rgb_twin_png"])
    grey = rgb.mean(axis=2).round().astype(np.uint8)
    paths["la_png"] = folder / "grey_alpha.png"
    Image.fromarray(np.dstack([grey, alpha]), mode="LA").save(paths["la_png"])
    paths["grey_twin_png"] = folder / "grey_twin.png"
    Image.fromarray(grey).save(paths["grey_twin_png"])

    cube = np.random.default_rng(0).random((2,) + rgb.shape[:2]).astype(np.float32)
    paths["two_channel_fits"] = folder / "two_channels.fits"
    fits.PrimaryHDU(cube).writeto(paths["two_channel_fits"])
    paths["no_data_fits"] = folder / "header_only.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU()]).writeto(paths["no_data_fits"])
    paths["nan_fits"] = folder / "all_nan.fits"
    fits.PrimaryHDU(np.full(rgb.shape[:2], np.nan, dtype=np.float32)).writeto(paths["nan_fits"])
    paths["missing_png"] = folder / "not_there.png"
    return {kind: str(path) for kind, path in paths.items()}


def broken_checkpoints(folder, release_models) -> dict:
    """kind -> (a .ckpt file that cannot be read, the cause its error must name)."""
    good = release_models["pytorch"].read_bytes()
    files = {"empty": (b"", "is empty (0 bytes)"), "truncated": (good[: len(good) // 2], "truncated"),
             "text": (b"id_str,file_loc\na,b.png\n", "not a checkpoint written by zoobot"),
             "keras": (release_models["tensorflow"].read_bytes(), "--backend tensorflow")}
    paths = {}
    for kind, (data, cause) in files.items():
        path = folder / f"{kind}.ckpt"
        path.write_bytes(data)
        paths[kind] = (path, cause)
    return paths


# ---------------------------------------------------------------------------------------------- subprocesses

def subprocess_env(**extra) -> dict:
    """The test environment for a child Python: this process's settings, the repo importable, offline."""
    env = dict(os.environ)  # the same thread counts as this process: float results must match bit for bit
    env.update(TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", KERAS_BACKEND="tensorflow", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), env.get("PYTHONPATH", "")]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def kill_when_ready(name, *args, marker, timeout=300, **env) -> None:
    """Start ``scripts/<name>``, wait until it creates ``marker`` (the script then blocks), and SIGKILL it.

    Fails the test if the script exits by itself first (it must not get to finish its work).
    """
    marker = pathlib.Path(marker)
    process = subprocess.Popen([sys.executable, str(SCRIPTS / name), *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=subprocess_env(**env))
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}) before it could be killed:\n"
                                     f"{process.stderr.read()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not reach {marker.name} within {timeout} s")
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


# ---------------------------------------------------------------------------------------------- shared settings

#: One tiny training run, identical for both backends, in-process and in the subprocess scripts: 20 galaxies
#: split 14/2/4, 3 batches of 4 per epoch, 3 epochs, deterministic on the CPU (no loader workers).
TRAIN_RUN = dict(model_architecture="tiny_cnn", batch_size=4, epochs=3, resize_size=32, gpus=0, num_workers=0,
                 random_state=1, color=False, learning_rate=3e-3)
#: Rows per chunk of prediction in the kill-and-rerun tests (the default, 4096, is a whole small catalog).
PREDICT_CHUNK_SIZE = 4
#: Preprocessing of prediction in the tests (no worker processes, 32 px).
PREDICT_OPTIONS = {"num_workers": 0, "resize_after_crop": 32, "batch_size": 3}


def use_chunk_size(prediction_runner, chunk_size: int, seen: list | None = None):
    """A replacement for ``prediction_runner.run_chunked_prediction`` that forces ``chunk_size`` and, if
    ``seen`` is given, appends the ``id_str`` list of the rows the backend's ``predict_rows`` is asked to
    compute (one call per prediction: the rows of every unfinished chunk, read by one loader)."""
    original = prediction_runner.run_chunked_prediction

    def run(catalog, predict_rows, *args, **kwargs):
        def recording(rows):
            if seen is not None:
                seen.append(rows["id_str"].tolist())
            return predict_rows(rows)

        kwargs["chunk_size"] = chunk_size
        return original(catalog, recording, *args, **kwargs)

    return run


def block_after_chunks(prediction_runner, n_chunks: int, marker) -> None:
    """Make the process stop for good (until killed) once ``n_chunks`` chunk files are written,
    after creating ``marker`` so that the parent knows when to kill it."""
    original = prediction_runner._write_chunk
    written = []

    def write(*args, **kwargs):
        original(*args, **kwargs)
        written.append(1)
        if len(written) >= n_chunks:
            pathlib.Path(marker).touch()
            while True:
                time.sleep(60)

    prediction_runner._write_chunk = write


def block_forever(marker) -> None:
    """Create ``marker`` and wait to be killed."""
    pathlib.Path(marker).touch()
    while True:
        time.sleep(60)


def torch_tree(seed: int = 0):
    """The tests' tiny PyTorch ZoobotTree (tiny_cnn, 1 channel, gz_rings), seeded, in eval mode."""
    import torch

    from zoobot.pytorch.estimators.define_model import ZoobotTree

    torch.manual_seed(seed)
    return ZoobotTree(RINGS.n_answers, schema=RINGS, architecture_name="tiny_cnn", channels=1).eval()


def keras_tree(seed: int = 0):
    """The tests' tiny Keras ZoobotTree (tiny_cnn, 1 channel, gz_rings), seeded and built."""
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    import keras
    import numpy as np

    from zoobot.tensorflow.estimators.define_model import ZoobotTree

    keras.utils.set_random_seed(seed)
    model = ZoobotTree(RINGS.n_answers, schema=RINGS, architecture_name="tiny_cnn", channels=1)
    model(np.zeros((1, 32, 32, 1), dtype="float32"))
    return model


def kill_forked_when_ready(target, *args, marker, timeout=300) -> None:
    """Run ``target(*args)`` in a forked child process (no new interpreter, so nothing is imported again),
    wait until it creates ``marker`` (it then blocks), and SIGKILL it.

    Only for PyTorch: a process that has started TensorFlow must not fork; use :func:`kill_when_ready`.
    """
    import multiprocessing

    marker = pathlib.Path(marker)

    def child():
        try:
            target(*args)
        except BaseException as err:  # noqa: BLE001 - report, never return into the parent's test runner
            print(f"child failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            os._exit(3)
        os._exit(4)  # finished without reaching the kill point

    process = multiprocessing.get_context("fork").Process(target=child, daemon=True)
    process.start()
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if not process.is_alive():
                raise AssertionError(f"the child exited (code {process.exitcode}) before it could be killed")
            if time.monotonic() > deadline:
                raise AssertionError(f"the child did not reach {marker.name} within {timeout} s")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        assert process.exitcode == -signal.SIGKILL
    finally:
        if process.is_alive():
            process.kill()
            process.join()
