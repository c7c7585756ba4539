"""Workload 6: the data pipeline alone - decode + augment images/s per worker, jpg 424 px -> 224 px.

Each backend, in its own process:

- **per worker** (one process/thread, no model): decode only (full scale, and at the reduced JPEG
  scale the pipeline asks for), then decode + the training transform (rotation, random resized crop,
  flip, greyscale) and decode + the evaluation transform (centre crop, resize), exactly as the
  ``GalaxyDataModule`` of that backend applies them
  (PyTorch: ``GalaxyDataset.__getitem__``; TensorFlow: the ``catalog_dataset`` map with one thread);
- **the whole loader** with ``--threads`` workers (``GalaxyDataModule(num_workers=threads)``
  train loader, batches of ``batch_size``);
- **the ceilings it has to feed**: the encoder's forward+backward and forward images/s at the same
  size and threads, on random tensors.

Ratios: workers needed to feed the model = model ceiling / per-worker images/s; loader / fwd+bwd ceiling.

    .venv/bin/python benchmarks/bench_data.py                  # 424 px jpgs -> 224 px, batch 32, 2 threads
    .venv/bin/python benchmarks/bench_data.py --quick
"""
from __future__ import annotations

import sys
import time

import _common as C


def torch_worker(settings, catalog) -> dict:
    s = settings
    torch = C.setup_torch(s["threads"])
    from zoobot.pytorch.datasets import GalaxyDataModule
    from zoobot.pytorch.datasets.galaxy_dataset import GalaxyDataset
    from zoobot.pytorch.datasets.transforms import EvalTransform, TrainTransform
    from zoobot.shared.images import load_image

    ceiling = C.torch_encoder_rates(s["architecture"], 1, s["image_size"], s["batch_size"], s["repeats"], s["warmup"],
                                    memory_format="channels_last")
    paths = catalog["file_loc"].tolist()
    train, evaluate = TrainTransform(1, s["image_size"]), EvalTransform(1, s["image_size"])
    torch.set_num_threads(1)  # one worker = one thread (DataLoader workers run with 1 thread)

    def decode(target_size):
        def run():
            for p in paths:
                load_image(p, target_size=target_size)
            return len(paths)
        return run

    def transform(t):
        dataset = GalaxyDataset(catalog, None, t)

        def run():
            for i in range(len(dataset)):
                dataset[i]
            return len(dataset)
        return run

    out = {
        "ceiling": ceiling,
        "decode_full": C.measure(decode(None), s["repeats"], s["warmup"]),
        "decode_pipeline_scale": C.measure(decode(train.min_source_size), s["repeats"], s["warmup"]),
        "decode_half_scale": C.measure(decode(s["source_size"] // 2), s["repeats"], s["warmup"]),
        "train_transform": C.measure(transform(train), s["repeats"], s["warmup"]),
        "eval_transform": C.measure(transform(evaluate), s["repeats"], s["warmup"]),
        "min_source_size": {"train": train.min_source_size, "eval": evaluate.min_source_size},
    }
    torch.set_num_threads(s["threads"])
    datamodule = GalaxyDataModule(label_cols=["ring"], train_catalog=catalog, val_catalog=catalog.iloc[:1],
                                  batch_size=s["batch_size"], num_workers=s["threads"], greyscale=True,
                                  resize_after_crop=s["image_size"])
    loader = datamodule.train_dataloader()

    def epoch():
        n = 0
        for images, _ in loader:
            n += images.shape[0]
        return n

    out["loader"] = C.measure(epoch, s["repeats"], s["warmup"])
    out["loader_workers"] = s["threads"]
    return out


def tf_worker(settings, catalog) -> dict:
    s = settings
    tf = C.setup_tf(s["threads"])
    from zoobot.tensorflow.data_utils.image_datasets import read_image_file
    from zoobot.tensorflow.datasets import GalaxyDataModule
    from zoobot.tensorflow.datasets.galaxy_datamodule import catalog_dataset
    from zoobot.tensorflow.datasets.transforms import EvalTransform, TrainTransform

    ceiling = C.strip_private(C.tf_encoder_rates(s["architecture"], 1, s["image_size"], s["batch_size"], s["repeats"],
                                                 s["warmup"]))
    train, evaluate = TrainTransform(1, s["image_size"]), EvalTransform(1, s["image_size"])
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    paths = tf.data.Dataset.from_tensor_slices(catalog["file_loc"].astype(str).tolist())

    def iterate(dataset):
        def run():
            n = 0
            for batch in dataset:
                n += int(batch.shape[0]) if hasattr(batch, "shape") else int(batch[0].shape[0])
            return n
        return run

    def decode(min_size):
        return paths.map(lambda p: read_image_file(p, channels=3, min_size=min_size)) \
            .map(lambda x: tf.shape(x)[:1]).batch(s["batch_size"]).with_options(options)

    def transformed(t):
        return catalog_dataset(catalog, t, None, batch_size=s["batch_size"], num_parallel_calls=None,
                               prefetch=None).with_options(options)

    out = {
        "ceiling": ceiling,
        "decode_full": C.measure(iterate(decode(None)), s["repeats"], s["warmup"]),
        "decode_pipeline_scale": C.measure(iterate(decode(train.min_source_size)), s["repeats"], s["warmup"]),
        "decode_half_scale": C.measure(iterate(decode(s["source_size"] // 2)), s["repeats"], s["warmup"]),
        "train_transform": C.measure(iterate(transformed(train)), s["repeats"], s["warmup"]),
        "eval_transform": C.measure(iterate(transformed(evaluate)), s["repeats"], s["warmup"]),
        "min_source_size": {"train": train.min_source_size, "eval": evaluate.min_source_size},
    }
    datamodule = GalaxyDataModule(label_cols=["ring"], train_catalog=catalog, val_catalog=catalog.iloc[:1],
                                  batch_size=s["batch_size"], num_workers=s["threads"], greyscale=True,
                                  resize_after_crop=s["image_size"])
    out["loader"] = C.measure(iterate(datamodule.train_dataloader()), s["repeats"], s["warmup"])
    out["loader_workers"] = s["threads"]
    return out


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=None, help="jpgs per pass (default 192; quick 16)")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    settings["n_images"] = args.n_images or (16 if args.quick else 192)
    peer = None if args.worker else C.check_peer_python(args.peer_python)
    catalog, _ = C.synthetic_catalog(settings["data_dir"], settings["n_images"], settings["source_size"], label="ring",
                                     n_workers=settings["threads"])
    catalog = catalog[["id_str", "file_loc", "ring"]]
    if args.worker:
        work = torch_worker if args.worker == "torch" else tf_worker
        C.write_worker_result(args.worker_out, work(settings, catalog))
        return {}

    results = {b: C.run_worker(__file__, b, argv, settings["threads"]) for b in settings["backends"]}
    notes = ["per worker = one process/thread, no model; images/s of decode + transform of single images (PyTorch) "
             "or of a sequential tf.data map with a 1-thread pool (TensorFlow)",
             "workers to feed = model ceiling / per-worker rate (the loader needs at least that many busy cores)"]
    if peer:
        results["peer"] = {"error": "no upstream data-pipeline workload is defined here: upstream's loader "
                                    "(galaxy-datasets) is timed end to end by bench_train/bench_predict --peer-python"}
        notes.append(f"peer: {results['peer']['error']}")
    names = {"torch": "PyTorch", "tf": "TensorFlow"}
    rows = []
    for backend in settings["backends"]:
        r = results[backend]
        train_ceiling, eval_ceiling = r["ceiling"]["train"], r["ceiling"]["eval"]
        for key, label in (("decode_full", "decode only, full scale"),
                           ("decode_pipeline_scale", f"decode only, pipeline scale (>= {r['min_source_size']['train']} px)"),
                           ("decode_half_scale", f"decode only, reduced scale (>= {settings['source_size'] // 2} px)"),
                           ("train_transform", "decode + train augmentations"),
                           ("eval_transform", "decode + eval transform")):
            rows.append([names[backend], label, r[key], C.ratio(train_ceiling, r[key]), C.ratio(eval_ceiling, r[key]),
                         None])
        rows.append([names[backend], f"train loader, {r['loader_workers']} workers, batched", r["loader"], None, None,
                     C.ratio(r["loader"], train_ceiling)])
        rows.append([names[backend], "ceiling: model fwd+bwd / fwd", f"{C.fmt(train_ceiling['median'])} / "
                     f"{C.fmt(eval_ceiling['median'])}", None, None, None])
    title = (f"Data pipeline: {settings['n_images']} jpgs of {settings['source_size']} px -> {settings['image_size']} px "
             f"greyscale; ceilings {settings['architecture']} batch {settings['batch_size']}, {settings['threads']} threads")
    tables = {title: C.markdown_table(
        ["backend", "step", "img/s", "workers to feed fwd+bwd", "workers to feed fwd", "loader / fwd+bwd ceiling"],
        rows)}
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
