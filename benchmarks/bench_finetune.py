"""Workload 4: finetuning with a frozen encoder - seconds per epoch, first epoch and later epochs.

Each backend, in its own process, finetunes ``FinetuneableZoobotClassifier(name=architecture,
num_classes=2, n_blocks=0)`` (random-init encoder: nothing is downloaded) on a synthetic ring /
no-ring jpg catalog with ``finetune.get_trainer(...).fit(model, datamodule)``, three ways:

- ``no cache``: ``cache_features=False``, deterministic training transform (centre crop + resize);
- ``cache``: ``cache_features=True``, the same deterministic training transform;
- ``default``: ``cache_features=None`` with the data module's default random augmentations (the
  cache cannot reuse features of images that change every epoch; it switches itself off).

Epoch 1 is timed alone; epochs 2.. are the ``--repeats`` timed repetitions. An epoch is measured
from its start to the start of the next one (training + validation + checkpointing). The ceiling
is the encoder's forward images/s on random tensors in the same process.

    .venv/bin/python benchmarks/bench_finetune.py               # 224 px EfficientNet-B0, batch 32, 2 threads
    .venv/bin/python benchmarks/bench_finetune.py --quick
    .venv/bin/python benchmarks/bench_finetune.py --n-train 512 --configs cache,no_cache
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import _common as C

CONFIGS = ("no_cache", "cache", "default")


def _epoch_seconds(starts: list[float], end: float, fit_start: float | None = None) -> list[float]:
    """Seconds of each epoch; the first one counts from ``fit_start`` when given, so that work done
    before the first epoch hook (set-up, sanity check, a one-off feature encoding pass) is in it."""
    marks = list(starts) + [end]
    if fit_start is not None and marks:
        marks[0] = min(marks[0], fit_start)
    return [b - a for a, b in zip(marks[:-1], marks[1:])]


def _summarise(epochs: list[float], warmup_epochs: int, images_per_epoch: int) -> dict:
    first, later = epochs[:warmup_epochs], epochs[warmup_epochs:]
    out = {"epoch_seconds": epochs, "first_epoch_s": first[0] if first else None,
           "later_epochs_s": C.summarise(later) if later else None,
           "first_epoch_img_per_s": images_per_epoch / first[0] if first else None}
    if first and later:
        out["speedup_later_vs_first"] = first[0] / out["later_epochs_s"]["median"]
    return out


def _memory_format(module) -> str:
    """'channels_last' if the first 4-D weight of ``module`` is stored channels-last, else 'contiguous'."""
    import torch

    weight = next((p for p in module.parameters() if p.ndim == 4), None)
    if weight is not None and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous"


def torch_worker(settings, catalogs, tmp: pathlib.Path) -> dict:
    s = settings
    C.setup_torch(s["threads"])
    import lightning as L

    from zoobot.pytorch.datasets import GalaxyDataModule
    from zoobot.pytorch.datasets.transforms import EvalTransform
    from zoobot.pytorch.training import finetune

    results = {"ceiling": {}}
    for memory_format in ("contiguous", "channels_last"):
        results["ceiling"][memory_format] = C.torch_encoder_rates(
            s["architecture"], 3, s["image_size"], s["batch_size"], s["repeats"], s["warmup"],
            memory_format=memory_format, modes=("eval",))

    class Timer(L.Callback):
        def __init__(self):
            self.fit_start, self.starts, self.end = None, [], None

        def on_fit_start(self, trainer, pl_module):  # callbacks run before the module's own on_fit_start
            self.fit_start = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

        def on_fit_end(self, trainer, pl_module):
            self.end = time.perf_counter()

    for config in s["configs"]:
        model = finetune.FinetuneableZoobotClassifier(
            name=s["architecture"], num_classes=2, n_blocks=0,
            cache_features={"no_cache": False, "cache": True, "default": None}[config])
        greyscale = model.channels == 1
        deterministic = config != "default"
        datamodule = GalaxyDataModule(
            label_cols=["ring"], train_catalog=catalogs["train"], val_catalog=catalogs["val"],
            batch_size=s["batch_size"], num_workers=s["num_workers"], resize_after_crop=s["image_size"],
            greyscale=greyscale,
            train_transform=EvalTransform(model.channels, s["image_size"]) if deterministic else None)
        timer = Timer()
        trainer = finetune.get_trainer(tmp / config, accelerator="cpu", max_epochs=s["warmup"] + s["repeats"],
                                       patience=1000, callbacks=[timer])
        trainer.fit(model, datamodule)
        results[config] = _summarise(_epoch_seconds(timer.starts, timer.end, timer.fit_start), s["warmup"],
                                     len(catalogs["train"]) + len(catalogs["val"]))
        results[config]["encoder_memory_format"] = _memory_format(model.encoder)
    results["call"] = ("finetune.get_trainer(save_dir, accelerator='cpu', max_epochs=E, callbacks=[timer]).fit("
                       "FinetuneableZoobotClassifier(name=ARCH, num_classes=2, n_blocks=0, cache_features=X), "
                       "GalaxyDataModule(label_cols=['ring'], train_catalog, val_catalog, batch_size, num_workers, "
                       "train_transform=EvalTransform(...) unless 'default'))")
    return results


def tf_worker(settings, catalogs, tmp: pathlib.Path) -> dict:
    s = settings
    C.setup_tf(s["threads"])
    import keras

    from zoobot.tensorflow.datasets import GalaxyDataModule
    from zoobot.tensorflow.datasets.transforms import EvalTransform
    from zoobot.tensorflow.training import finetune

    results = {"ceiling": {"keras": C.strip_private(C.tf_encoder_rates(
        s["architecture"], 3, s["image_size"], s["batch_size"], s["repeats"], s["warmup"], modes=("eval",)))}}

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.fit_start, self.starts, self.end = None, [], None

        def on_train_begin(self, logs=None):
            self.fit_start = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.starts.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

    for config in s["configs"]:
        model = finetune.FinetuneableZoobotClassifier(
            name=s["architecture"], num_classes=2, n_blocks=0,
            cache_features={"no_cache": False, "cache": True, "default": None}[config])
        channels = int(getattr(model, "channels", 3) or 3)
        deterministic = config != "default"
        datamodule = GalaxyDataModule(
            label_cols=["ring"], train_catalog=catalogs["train"], val_catalog=catalogs["val"],
            batch_size=s["batch_size"], num_workers=s["num_workers"], resize_after_crop=s["image_size"],
            greyscale=channels == 1,
            train_transform=EvalTransform(channels, s["image_size"]) if deterministic else None)
        timer = Timer()
        trainer = finetune.get_trainer(tmp / config, accelerator="cpu", max_epochs=s["warmup"] + s["repeats"],
                                       patience=1000, callbacks=[timer])
        trainer.fit(model, datamodule)
        results[config] = _summarise(_epoch_seconds(timer.starts, timer.end, timer.fit_start), s["warmup"],
                                     len(catalogs["train"]) + len(catalogs["val"]))
    results["call"] = ("zoobot.tensorflow.training.finetune.get_trainer(save_dir, accelerator='cpu', max_epochs=E, "
                       "callbacks=[timer]).fit(FinetuneableZoobotClassifier(name=ARCH, num_classes=2, n_blocks=0, "
                       "cache_features=X), GalaxyDataModule(... train_transform=EvalTransform(...) unless 'default'))")
    return results


def make_catalogs(settings) -> dict:
    n_train, n_val = settings["n_train"], settings["n_val"]
    catalog, _ = C.synthetic_catalog(settings["data_dir"], n_train + n_val, settings["source_size"], label="ring",
                                     n_workers=settings["threads"])
    return {"train": catalog.iloc[:n_train].reset_index(drop=True),
            "val": catalog.iloc[n_train:].reset_index(drop=True)}


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None, help="training galaxies (default 256; quick 16)")
    parser.add_argument("--n-val", type=int, default=None, help="validation galaxies (default 64; quick 8)")
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers (default: --threads)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    settings["n_train"] = args.n_train or (16 if args.quick else 256)
    settings["n_val"] = args.n_val or (8 if args.quick else 64)
    settings["num_workers"] = args.threads if args.num_workers is None else args.num_workers
    settings["configs"] = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not settings["configs"] or any(c not in CONFIGS for c in settings["configs"]):
        C.usage_error(f"--configs: choose from {CONFIGS}, got {args.configs!r}")
    peer = None if args.worker else C.check_peer_python(args.peer_python)
    catalogs = make_catalogs(settings)
    if args.worker:
        with tempfile.TemporaryDirectory(prefix="bench_finetune_") as tmp:
            work = torch_worker if args.worker == "torch" else tf_worker
            C.write_worker_result(args.worker_out, work(settings, catalogs, pathlib.Path(tmp)))
        return {}

    results = {b: C.run_worker(__file__, b, argv, settings["threads"]) for b in settings["backends"]}
    if peer:
        results["peer"] = C.run_peer(peer, "finetune", dict(
            settings, train_catalog=catalogs["train"].to_dict(orient="list"),
            val_catalog=catalogs["val"].to_dict(orient="list")))
    names = {"torch": "PyTorch", "tf": "TensorFlow", "peer": "upstream (peer env)"}
    rows = []
    for backend, r in results.items():
        ceiling = r.get("ceiling", {})
        forward = (ceiling.get("channels_last") or ceiling.get("keras") or ceiling.get("contiguous") or {}).get("eval")
        # upstream has no feature cache: its one run is head_only training with the same deterministic transform
        configs = ("default",) if backend == "peer" else settings["configs"]
        for config in configs:
            c = r.get(config)
            if not c:
                continue
            label = "head_only (no cache)" if backend == "peer" else config
            rows.append([names[backend], label, c["first_epoch_s"], c["later_epochs_s"],
                         c.get("speedup_later_vs_first"), c["first_epoch_img_per_s"],
                         C.ratio(c["first_epoch_img_per_s"], forward), forward])
    title = (f"Finetuning a frozen {settings['architecture']} encoder (n_blocks=0), {settings['image_size']} px "
             f"from {settings['source_size']} px jpgs, {settings['n_train']} train + {settings['n_val']} val galaxies, "
             f"batch {settings['batch_size']}, {settings['threads']} threads, {settings['num_workers']} loader workers")
    tables = {title: C.markdown_table(
        ["backend", "config", "epoch 1 s", "later epochs s", "speed-up later vs epoch 1", "epoch 1 img/s",
         "epoch 1 / fwd ceiling", "fwd ceiling img/s"], rows)}
    notes = ["target (issue 7): epochs after the first >= 10x faster than the first (frozen encoder)",
             "epoch = start of the epoch to the start of the next (training, validation, checkpoint); epoch 1 "
             "counts from the start of fit (set-up, sanity check and the one-off feature encoding pass of "
             "feature replay included); "
             "img/s counts train + val images; the fwd ceiling is the best memory format measured "
             "(PyTorch channels_last) on random tensors in the same process"]
    if peer and "error" in results.get("peer", {}):
        notes.append(f"peer run failed: {results['peer']['error']}")
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
