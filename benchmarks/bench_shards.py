"""Workload 5: TFRecord shards (TensorFlow only) - writing images/s, reading images/s with and without the model.

In one TensorFlow process:

1. the ceiling: the Keras encoder's forward images/s on random tensors (same architecture, batch,
   size, channels, threads), as a compiled ``tf.function``;
2. writing: ``ShardConfig(shard_dir, size).prepare_shards(catalog, columns_to_save=['ring'])`` from
   ``source_size`` px jpgs (decode, antialiased resize, PNG encode, serialise), images/s;
3. reading without the model: every batch of ``tfrecord_datasets.get_dataset(locs, ['ring'], batch,
   shuffle=...)`` (parse + PNG decode), in file order and shuffled (interleaved files);
4. reading with the model: the same batches through ``preprocess.preprocess_dataset`` (greyscale,
   [0, 1]) into the same compiled forward pass as the ceiling.

Ratios: read+model / ceiling (target >= 0.9: reading is never the bottleneck) and read-only / ceiling
(how many times faster than the model the reader is).

    .venv/bin/python benchmarks/bench_shards.py                 # 224 px shards, EfficientNet-B0, batch 32, 2 threads
    .venv/bin/python benchmarks/bench_shards.py --quick
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import _common as C


def tf_worker(settings, catalog, tmp: pathlib.Path) -> dict:
    s = settings
    tf = C.setup_tf(s["threads"])
    from zoobot.tensorflow import preprocess
    from zoobot.tensorflow.data_utils import tfrecord_datasets
    from zoobot.tensorflow.data_utils.create_shards import ShardConfig

    ceiling = C.tf_encoder_rates(s["architecture"], 1, s["image_size"], s["batch_size"], s["repeats"], s["warmup"],
                                 modes=("eval",))
    forward = ceiling.pop("_forward_fn")
    ceiling.pop("_encoder")
    counter = iter(range(10 ** 6))
    configs = []

    def write():
        config = ShardConfig(tmp / f"shards_{next(counter)}", size=s["image_size"], shard_size=s["shard_size"])
        config.prepare_shards(catalog, columns_to_save=["ring"], num_workers=s["threads"])
        configs.append(config)
        return len(catalog)

    write_rate = C.measure(write, s["repeats"], s["warmup"])
    config = configs[-1]
    locs = config.train_tfrecord_locs() + config.val_tfrecord_locs() + config.test_tfrecord_locs()

    def read(shuffle: bool):
        def run():
            n = 0
            for batch in tfrecord_datasets.get_dataset(locs, ["ring"], s["batch_size"], shuffle=shuffle):
                n += int(batch["matrix"].shape[0])
            return n
        return run

    preprocessing = preprocess.PreprocessingConfig(label_cols=["ring"], input_size=s["image_size"],
                                                   normalise_from_uint8=True, make_greyscale=True)

    def read_with_model():
        n = 0
        raw = tfrecord_datasets.get_dataset(locs, ["ring"], s["batch_size"], shuffle=False, drop_remainder=True)
        result = None
        for images, _ in preprocess.preprocess_dataset(raw, preprocessing):
            result = forward(images)
            n += int(images.shape[0])
        _ = None if result is None else result.numpy()
        return n

    return {
        "ceiling": ceiling,
        "write": write_rate,
        "read_in_order": C.measure(read(False), s["repeats"], s["warmup"]),
        "read_shuffled": C.measure(read(True), s["repeats"], s["warmup"]),
        "read_with_model": C.measure(read_with_model, s["repeats"], s["warmup"]),
        "n_shards": len(locs),
        "shard_mb": sum(pathlib.Path(p).stat().st_size for p in locs) / 2 ** 20,
        "calls": {
            "write": f"ShardConfig(dir, size={s['image_size']}, shard_size={s['shard_size']}).prepare_shards("
                     f"catalog, columns_to_save=['ring'], num_workers={s['threads']})",
            "read": f"tfrecord_datasets.get_dataset(locs, ['ring'], {s['batch_size']}, shuffle=False|True)",
            "read_with_model": "preprocess.preprocess_dataset(get_dataset(...), PreprocessingConfig(label_cols=['ring'], "
                               "input_size, normalise_from_uint8=True, make_greyscale=True)) -> compiled encoder forward",
        },
        "tf_version": tf.__version__,
    }


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=None, help="galaxies to shard (default 512; quick 24)")
    parser.add_argument("--shard-size", type=int, default=None, help="galaxies per shard file (default 64; quick 8)")
    parser.set_defaults(backends="tf")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    if settings["backends"] != ["tf"]:
        C.usage_error("bench_shards measures TFRecord shards, which only the TensorFlow backend has: "
                      "use --backends tf (the default).")
    settings["n_images"] = args.n_images or (24 if args.quick else 512)
    settings["shard_size"] = args.shard_size or (8 if args.quick else 64)
    peer = None if args.worker else C.check_peer_python(args.peer_python)
    catalog, _ = C.synthetic_catalog(settings["data_dir"], settings["n_images"], settings["source_size"], label="ring",
                                     n_workers=settings["threads"])
    if args.worker:
        with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
            C.write_worker_result(args.worker_out, tf_worker(settings, catalog, pathlib.Path(tmp)))
        return {}

    results = {"tf": C.run_worker(__file__, "tf", argv, settings["threads"])}
    notes = ["target (issue 7): TFRecord reading >= 0.9 x the TF forward ceiling (never the bottleneck)"]
    if peer:
        results["peer"] = {"error": "no upstream shard workload is defined: upstream Zoobot 2.x (PyTorch) has no "
                                    "TFRecord shards, and the upstream 1.x TensorFlow API is not driven by these "
                                    "scripts; compare with the figures in shared/reference/benchmarks.md"}
        notes.append(f"peer: {results['peer']['error']}")
    r = results["tf"]
    forward = r["ceiling"]["eval"]
    rows = [["write shards (prepare_shards)", r["write"], None, None],
            ["read, file order (get_dataset)", r["read_in_order"], C.ratio(r["read_in_order"], forward), None],
            ["read, shuffled (interleaved files)", r["read_shuffled"], C.ratio(r["read_shuffled"], forward), None],
            ["read + preprocess + model forward", r["read_with_model"], C.ratio(r["read_with_model"], forward),
             r["read_with_model"]["per_cpu_second"]],
            ["ceiling: model forward on random tensors", forward, 1.0, forward["per_cpu_second"]]]
    title = (f"TFRecord shards: {settings['n_images']} galaxies from {settings['source_size']} px jpgs -> "
             f"{settings['image_size']} px PNG shards of {settings['shard_size']} ({r['n_shards']} files, "
             f"{r['shard_mb']:.1f} MiB), {settings['architecture']}, greyscale, batch {settings['batch_size']}, "
             f"{settings['threads']} threads")
    tables = {title: C.markdown_table(["step", "img/s", "ratio to forward ceiling", "img per CPU-second"], rows)}
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
