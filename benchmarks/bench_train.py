"""Workload 2: end-to-end training from jpg files through ``train`` (both backends).

Each backend, in its own process:

1. measures the ceiling: encoder forward+backward images/s on random tensors (same architecture,
   batch, size, channels, threads; PyTorch in channels_last, as ``ZoobotTree`` runs) - before training,
   and once more right after every epoch (the *paired* ceiling: the machine is shared, its speed drifts);
2. calls ``zoobot.pytorch.training.train_with_pytorch_lightning.train`` /
   ``zoobot.tensorflow.training.train_with_keras.train`` exactly as a user does, on a catalog of
   synthetic jpgs (``source_size`` px on disk, decoded, augmented and resized to ``image_size``),
   with a callback that timestamps every epoch and batch;
3. reports training images/s per epoch - the first epoch is the warm-up, the next ``--repeats``
   epochs are timed - from the epoch start to the end of its last training batch (validation
   excluded), split into time spent waiting for data and time in training steps.

    .venv/bin/python benchmarks/bench_train.py                  # 224 px EfficientNet-B0, batch 32, 2 threads
    .venv/bin/python benchmarks/bench_train.py --quick
    .venv/bin/python benchmarks/bench_train.py --steps-per-epoch 5 --num-workers 1
    .venv/bin/python benchmarks/bench_train.py --backends tf --trace-breakdown   # + where the first step goes

Each epoch also records its first batch (``first_batch_s``): in the first epoch that is the graph's tracing
and optimisation plus one step. ``--trace-breakdown`` (TensorFlow) splits it, on the model ``train`` builds,
into Python tracing of ``train_step`` (``tf.function.get_concrete_function``), the first call (TensorFlow's
graph optimisation and set-up, plus one step) and later steps, with TensorFlow's graph optimiser (grappler's
meta optimiser) on and off.
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import _common as C


def _epoch_stats(events: list[dict], batch_size: int) -> list[dict]:
    """Per-epoch timings from the callback's timestamps."""
    epochs = []
    for epoch in events:
        starts, ends = epoch["batch_start"], epoch["batch_end"]
        if not ends:
            continue
        wait, previous = 0.0, epoch["start"]
        for s, e in zip(starts, ends):
            wait += s - previous
            previous = e
        seconds = ends[-1] - epoch["start"]
        images = len(ends) * batch_size
        epochs.append({"images": images, "seconds": seconds, "img_per_s": images / seconds,
                       "data_wait_s": wait, "step_s": seconds - wait,
                       "first_batch_wait_s": starts[0] - epoch["start"],
                       "first_batch_s": ends[0] - starts[0],
                       # CPU time of the training process (all its threads; loader workers excluded)
                       "main_cpu_s": epoch["cpu_end"] - epoch["cpu_start"]})
    return epochs


def _timed_rate(step) -> float:
    start = time.perf_counter()
    images = step()
    return images / (time.perf_counter() - start)


def _summaries(epochs: list[dict], warmup: int, paired: list[float]) -> dict:
    """Per-epoch summaries; ``paired[i]`` is the ceiling measured right after epoch ``i``."""
    for epoch, ceiling in zip(epochs, paired):
        epoch["paired_ceiling_img_per_s"] = ceiling
        epoch["ratio_to_paired_ceiling"] = epoch["img_per_s"] / ceiling
    timed = epochs[warmup:] or epochs
    out = {"epochs": epochs,
           "train": C.rate_summary([e["images"] for e in timed], [e["seconds"] for e in timed]),
           "steps_only": C.rate_summary([e["images"] for e in timed], [e["step_s"] for e in timed]),
           "data_wait_fraction": C.summarise([e["data_wait_s"] / e["seconds"] for e in timed]),
           "per_cpu_second": C.summarise([e["images"] / e["main_cpu_s"] for e in timed])}
    if all("ratio_to_paired_ceiling" in e for e in timed):
        out["paired_ceiling"] = C.summarise([e["paired_ceiling_img_per_s"] for e in timed])
        out["ratio_to_paired_ceiling"] = C.summarise([e["ratio_to_paired_ceiling"] for e in timed])
    return out


def torch_worker(settings, catalogs, save_dir) -> dict:
    s = settings
    torch = C.setup_torch(s["threads"])
    import lightning as L

    from zoobot.pytorch.training.train_with_pytorch_lightning import train
    from zoobot.shared.schemas import decals_dr5_ortho_schema

    ceiling_step = C.torch_ceiling_step(s["architecture"], 1, s["image_size"], s["batch_size"], "train",
                                        "channels_last")
    ceiling = {"train": C.measure(ceiling_step, s["repeats"], s["warmup"])}

    class Timer(L.Callback):
        def __init__(self):
            self.events, self.paired = [], []

        def on_train_epoch_end(self, trainer, pl_module):
            # one ceiling batch right after each epoch (after its validation), so the ratio of every
            # epoch is taken against the machine's speed of that moment
            self.paired.append(_timed_rate(ceiling_step))

        def on_train_epoch_start(self, trainer, pl_module):
            self.events.append({"start": time.perf_counter(), "cpu_start": time.process_time(), "batch_start": [],
                                "batch_end": []})

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.events[-1]["batch_start"].append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.events[-1]["batch_end"].append(time.perf_counter())
            self.events[-1]["cpu_end"] = time.process_time()

    timer = Timer()
    start = time.perf_counter()
    train(save_dir, decals_dr5_ortho_schema, train_catalog=catalogs["train"], val_catalog=catalogs["val"],
          model_architecture=s["architecture"], batch_size=s["batch_size"], epochs=s["warmup"] + s["repeats"],
          patience=1000, resize_size=s["image_size"], gpus=0, num_workers=s["num_workers"],
          extra_callbacks=[timer])
    out = _summaries(_epoch_stats(timer.events, s["batch_size"]), s["warmup"], timer.paired)
    out.update(ceiling=ceiling, total_seconds=time.perf_counter() - start, torch_threads=torch.get_num_threads(),
               call=(f"train_with_pytorch_lightning.train(save_dir, decals_dr5_ortho_schema, train_catalog, val_catalog, "
                     f"model_architecture={s['architecture']!r}, batch_size={s['batch_size']}, "
                     f"epochs={s['warmup'] + s['repeats']}, resize_size={s['image_size']}, gpus=0, "
                     f"num_workers={s['num_workers']}, extra_callbacks=[timer])"))
    return out


def tf_worker(settings, catalogs, save_dir) -> dict:
    s = settings
    C.setup_tf(s["threads"])
    import keras

    from zoobot.shared.schemas import decals_dr5_ortho_schema
    from zoobot.tensorflow.training.train_with_keras import train

    ceiling_step = C.tf_ceiling_step(s["architecture"], 1, s["image_size"], s["batch_size"], "train")
    ceiling = {"train": C.measure(ceiling_step, s["repeats"], s["warmup"])}

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events, self.paired = [], []

        def on_epoch_end(self, epoch, logs=None):
            self.paired.append(_timed_rate(ceiling_step))  # one ceiling batch right after each epoch

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append({"start": time.perf_counter(), "cpu_start": time.process_time(), "batch_start": [],
                                "batch_end": []})

        def on_train_batch_begin(self, batch, logs=None):
            self.events[-1]["batch_start"].append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            self.events[-1]["batch_end"].append(time.perf_counter())
            self.events[-1]["cpu_end"] = time.process_time()

    timer = Timer()
    start = time.perf_counter()
    train(save_dir, decals_dr5_ortho_schema, train_catalog=catalogs["train"], val_catalog=catalogs["val"],
          model_architecture=s["architecture"], batch_size=s["batch_size"], epochs=s["warmup"] + s["repeats"],
          patience=1000, resize_size=s["image_size"], gpus=0, num_workers=s["num_workers"],
          extra_callbacks=[timer])
    out = _summaries(_epoch_stats(timer.events, s["batch_size"]), s["warmup"], timer.paired)
    out.update(ceiling=ceiling, total_seconds=time.perf_counter() - start,
               call=(f"train_with_keras.train(save_dir, decals_dr5_ortho_schema, train_catalog, val_catalog, "
                     f"model_architecture={s['architecture']!r}, batch_size={s['batch_size']}, "
                     f"epochs={s['warmup'] + s['repeats']}, resize_size={s['image_size']}, gpus=0, "
                     f"num_workers={s['num_workers']}, extra_callbacks=[timer])"))
    if s.get("trace_breakdown"):
        out["trace_breakdown"] = tf_trace_breakdown(s)
    return out


def tf_trace_breakdown(settings) -> dict:
    """Python tracing / first call / later steps of the ``train_step`` of the ZoobotTree ``train`` builds, on
    random images, with grappler's meta optimiser on and then off (each in a fresh ``tf.function``)."""
    import numpy as np
    import tensorflow as tf

    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema
    from zoobot.shared.training_config import TrainConfig
    from zoobot.tensorflow.training import train_with_keras

    s = settings
    config = TrainConfig(backend="tensorflow", save_dir="unused", schema=schema, architecture_name=s["architecture"],
                         batch_size=s["batch_size"], resize_after_crop=s["image_size"])
    model = train_with_keras._build_model(config)
    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.random((s["batch_size"], s["image_size"], s["image_size"], 1), dtype=np.float32)),
             tf.constant(rng.integers(0, 10, (s["batch_size"], schema.n_answers)).astype("float32")))
    out = {}
    for optimiser in ("on", "off"):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": optimiser == "off"})
        step = tf.function(model.train_step)
        start = time.perf_counter()
        concrete = step.get_concrete_function(batch)
        trace = time.perf_counter() - start
        first = _seconds(lambda: step(batch))
        later = [_seconds(lambda: step(batch)) for _ in range(max(s["repeats"], 1))]
        out[f"graph_optimiser_{optimiser}"] = {"python_trace_s": trace, "first_call_s": first,
                                               "later_steps_s": C.summarise(later),
                                               "graph_ops": len(concrete.graph.get_operations())}
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
    return out


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def make_catalogs(settings) -> dict:
    n_train = settings["batch_size"] * settings["steps_per_epoch"]
    n_val = settings["batch_size"]
    catalog, _ = C.synthetic_catalog(settings["data_dir"], n_train + n_val, settings["source_size"],
                                     n_workers=settings["threads"])
    return {"train": catalog.iloc[:n_train].reset_index(drop=True),
            "val": catalog.iloc[n_train:].reset_index(drop=True)}


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="training batches per epoch (default 3; quick 2)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data-loading workers passed to train() (default: --threads)")
    parser.add_argument("--trace-breakdown", action="store_true",
                        help="TensorFlow: also split the first step into tracing, graph optimisation and the step")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    settings["trace_breakdown"] = bool(args.trace_breakdown)
    settings["steps_per_epoch"] = args.steps_per_epoch or (2 if args.quick else 3)
    settings["num_workers"] = args.threads if args.num_workers is None else args.num_workers
    peer = None if args.worker else C.check_peer_python(args.peer_python)
    catalogs = make_catalogs(settings)
    if args.worker:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            work = torch_worker if args.worker == "torch" else tf_worker
            C.write_worker_result(args.worker_out, work(settings, catalogs, pathlib.Path(tmp) / "run"))
        return {}

    results = {backend: C.run_worker(__file__, backend, argv, settings["threads"]) for backend in settings["backends"]}
    if peer:
        results["peer"] = C.run_peer(peer, "train", dict(
            settings, train_catalog=catalogs["train"].to_dict(orient="list"),
            val_catalog=catalogs["val"].to_dict(orient="list")))
    rows = []
    names = {"torch": "PyTorch train()", "tf": "TensorFlow train()", "peer": "upstream (peer env)"}
    for backend, r in results.items():
        if "train" not in r:
            continue
        ceiling = r.get("ceiling", {}).get("train")
        cpu, cpu_ceiling = r.get("per_cpu_second"), (ceiling or {}).get("per_cpu_second")
        rows.append([names[backend], r["train"], ceiling, C.ratio(r["train"], ceiling),
                     r.get("paired_ceiling"), r.get("ratio_to_paired_ceiling"),
                     C.ratio(r["steps_only"], ceiling), r["data_wait_fraction"]["median"], cpu,
                     C.ratio(cpu, cpu_ceiling)])
    title = (f"Training from {settings['source_size']} px jpgs: {settings['architecture']}, {settings['image_size']} px, "
             f"greyscale, batch {settings['batch_size']}, {settings['steps_per_epoch']} steps/epoch, "
             f"{settings['threads']} threads, {settings['num_workers']} loader workers (img/s over epochs 2..)")
    tables = {title: C.markdown_table(
        ["run", "train img/s", "ceiling fwd+bwd img/s (before)", "train / ceiling", "paired ceiling img/s",
         "train / paired ceiling", "steps only / ceiling", "data-wait fraction", "img per training-process CPU-s",
         "CPU efficiency / ceiling"], rows)}
    first_rows = []
    for backend, r in results.items():
        epochs = r.get("epochs") or []
        if len(epochs) > 1 and "first_batch_s" in epochs[0]:
            later = C.summarise([e["first_batch_s"] for e in epochs[1:]])
            first_rows.append([names[backend], epochs[0]["first_batch_s"], later,
                               epochs[0]["first_batch_s"] - later["median"], epochs[0]["seconds"]])
    if first_rows:
        tables["First epoch: the first batch (tracing + graph optimisation + one step) against later first batches"] = \
            C.markdown_table(["run", "epoch 1 first batch s", "later epochs' first batch s", "difference s (~tracing)",
                              "epoch 1 training s"], first_rows)
    breakdown = results.get("tf", {}).get("trace_breakdown")
    if breakdown:
        tables["TensorFlow train_step: where the first step goes"] = C.markdown_table(
            ["graph optimiser (grappler meta)", "Python tracing s", "first call s (optimisation + set-up + step)",
             "later steps s", "graph ops"],
            [[k.rsplit("_", 1)[-1], v["python_trace_s"], v["first_call_s"], v["later_steps_s"], v["graph_ops"]]
             for k, v in breakdown.items()])
    notes = ["train img/s = training images of an epoch / (epoch start -> end of its last training batch), "
             "validation excluded; steps only = the same minus the time spent waiting for the next batch",
             "ceiling (before) = --repeats batches before training; paired ceiling = one ceiling batch right after "
             "each epoch, and train / paired ceiling = the median over the timed epochs of each epoch's ratio to "
             "the ceiling measured next to it (robust to load that changes during the run)",
             "img per training-process CPU-s: training images / CPU time of the training process (loader "
             "workers excluded); its ratio to the ceiling's img per CPU-s separates the step's own efficiency "
             "from CPU taken by the loader workers and other load",
             "target (issue 7): train / ceiling >= 0.8 in both backends"]
    if peer and "error" in results.get("peer", {}):
        notes.append(f"peer run failed: {results['peer']['error']}")
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
