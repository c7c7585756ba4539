"""Workload 3: predictions through ``predict`` (n_samples 1 and 5) and peak memory at 1k/10k/100k rows.

Speed, each backend in its own process:

1. the ceiling: encoder forward images/s on random tensors (same architecture, batch, size,
   channels, threads; PyTorch channels_last as ``ZoobotTree`` runs), and the whole model's forward;
   the encoder ceiling is measured again right before every timed predict call (*paired* ceiling);
2. ``predict_on_catalog.predict(catalog, model, n_samples=k, save_loc='....parquet')`` from jpg files
   to a written parquet file, k = 1 and 5 interleaved (warm-up, then ``--repeats`` timed runs);
3. ratios: predict(k=1) / forward ceiling (target >= 0.8) and time(k=5) / time(k=1) (target <= 1.3;
   MC dropout runs the encoder once and only the head k times).

Memory: one fresh process per catalog size (so the peak RSS is per size) predicts a catalog whose rows
cycle through a few hundred jpgs on disk, every row with its own ``id_str``, with ``predict``'s
default loader settings and ``save_loc`` parquet. To finish 100k rows in minutes it uses a **tiny
model** (``tiny_cnn``, 64 px jpgs, 64 px input); the memory behaviour under test (chunked streaming to
disk) does not depend on the encoder. Target: peak RSS grows < 10 % from 10k to 100k rows.

    .venv/bin/python benchmarks/bench_predict.py                      # speed (224 px EfficientNet-B0) + memory
    .venv/bin/python benchmarks/bench_predict.py --quick
    .venv/bin/python benchmarks/bench_predict.py --skip-memory --n-images 320
    .venv/bin/python benchmarks/bench_predict.py --skip-speed --memory-rows 1000,10000,100000
    .venv/bin/python benchmarks/bench_predict.py --backends torch --skip-speed --memory-rows 10000,100000 --memory-profile

Engine axis (issue 16, ``--engines``): in ONE process per channel count, so that the ratios come from one run,

1. forward ceilings on random batches: PyTorch (channels_last, the encoder + head) and ONNX Runtime (the same
   weights exported by ``zoobot.pytorch.onnx_export.export_onnx``), with the largest relative difference;
2. the decode ceiling: :class:`zoobot.onnx.images.BatchReader` reading the jpgs with no model (threads),
   and the same images read by a process pool (threads vs processes); per-core rate with one thread;
3. end to end, jpgs -> parquet: today's PyTorch ``predict`` and ``zoobot.onnx.predict``, and the largest
   relative difference of their outputs;
4. ratios: ONNX end-to-end / PyTorch end-to-end (target >= 2) and ONNX end-to-end / min(decode ceiling,
   ONNX forward ceiling) (target >= 0.8).

    nice -n 10 .venv/bin/python benchmarks/bench_predict.py --engines torch,onnx --channels 1,3 --skip-speed \
        --skip-memory --n-images 256 --repeats 2
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import _common as C

SAMPLES = (1, 5)


def _model_call(settings) -> str:
    return (f"predict_on_catalog.predict(catalog, model, n_samples=k, save_loc=path.parquet, "
            f"datamodule_kwargs={{'batch_size': {settings['batch_size']}, 'num_workers': {settings['num_workers']}}})")


def _time_predictions(predict, catalog, model, settings, tmp: pathlib.Path, ceiling_step) -> dict:
    """Interleaved k=1 / k=5 runs: warm-up, then timed repetitions; before every timed run, one
    measurement of the forward ceiling (the *paired* ceiling: the machine's speed drifts)."""
    counts, seconds, cpu = {k: [] for k in SAMPLES}, {k: [] for k in SAMPLES}, {k: [] for k in SAMPLES}
    paired = {k: [] for k in SAMPLES}
    kwargs = {"batch_size": settings["batch_size"], "num_workers": settings["num_workers"]}
    for rep in range(settings["warmup"] + settings["repeats"]):
        for k in SAMPLES:
            save_loc = tmp / f"predictions_{rep}_{k}.parquet"
            timed = rep >= settings["warmup"]
            if timed:
                ceiling_start = time.perf_counter()
                paired[k].append(ceiling_step() / (time.perf_counter() - ceiling_start))
            start, cpu_start = time.perf_counter(), time.process_time()
            out = predict(catalog, model, n_samples=k, save_loc=save_loc, datamodule_kwargs=kwargs)
            elapsed, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            if out.shape[:1] != (len(catalog),) or out.shape[-1] != k or not save_loc.exists():
                raise RuntimeError(f"predict returned {out.shape} / no file for {len(catalog)} rows, n_samples={k}")
            if timed:
                counts[k].append(len(catalog))
                seconds[k].append(elapsed)
                cpu[k].append(cpu_seconds)
    out = {}
    for k in SAMPLES:
        out[f"n_samples_{k}"] = C.rate_summary(counts[k], seconds[k])
        # CPU time of the predicting process (PyTorch loader workers excluded; tf.data threads included)
        out[f"n_samples_{k}"]["per_cpu_second"] = C.summarise([n / c for n, c in zip(counts[k], cpu[k])])
        out[f"n_samples_{k}"]["paired_ceiling"] = C.summarise(paired[k])
        out[f"n_samples_{k}"]["ratio_to_paired_ceiling"] = C.summarise(
            [n / t / c for n, t, c in zip(counts[k], seconds[k], paired[k])])
    return out


def torch_speed(settings, catalog, tmp) -> dict:
    s = settings
    torch = C.setup_torch(s["threads"])
    from zoobot.pytorch.estimators.define_model import ZoobotTree
    from zoobot.pytorch.predictions.predict_on_catalog import predict
    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema

    ceiling_step = C.torch_ceiling_step(s["architecture"], 1, s["image_size"], s["batch_size"], "eval",
                                        "channels_last", batches=3)
    ceiling = {"eval": C.measure(ceiling_step, s["repeats"], s["warmup"])}
    model = ZoobotTree(schema.n_answers, schema=schema, architecture_name=s["architecture"], channels=1)
    model.input_size = s["image_size"]
    model.eval()
    x = torch.rand(s["batch_size"], 1, s["image_size"], s["image_size"])

    def model_forward():
        with torch.inference_mode():
            for _ in range(3):
                model(x)
        return 3 * s["batch_size"]

    ceiling["model_eval"] = C.measure(model_forward, s["repeats"], s["warmup"])
    out = _time_predictions(predict, catalog, model, s, tmp, ceiling_step)
    out.update(ceiling=ceiling, call=_model_call(s))
    return out


def tf_speed(settings, catalog, tmp) -> dict:
    s = settings
    # as many inter-op threads as intra-op ones: TensorFlow's own default (one per core), so predict and its
    # ceilings run as in a user's session (docs/benchmarks.md 3c, session 6)
    tf = C.setup_tf(s["threads"], inter_op_threads=s["threads"])
    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema
    from zoobot.tensorflow.estimators.define_model import ZoobotTree
    from zoobot.tensorflow.predictions.predict_on_catalog import predict

    ceiling_step = C.tf_ceiling_step(s["architecture"], 1, s["image_size"], s["batch_size"], "eval", batches=3)
    ceiling = {"eval": C.measure(ceiling_step, s["repeats"], s["warmup"])}
    model = ZoobotTree(schema.n_answers, schema=schema, architecture_name=s["architecture"], channels=1)
    model.input_size = s["image_size"]
    x = tf.random.uniform((s["batch_size"], s["image_size"], s["image_size"], 1))
    model(x, training=False)
    forward = tf.function(lambda images: model(images, training=False))

    def model_forward():
        for _ in range(3):
            result = forward(x)
        _ = result.numpy()
        return 3 * s["batch_size"]

    ceiling["model_eval"] = C.measure(model_forward, s["repeats"], s["warmup"])
    out = _time_predictions(predict, catalog, model, s, tmp, ceiling_step)
    out.update(ceiling=ceiling, call=_model_call(s))
    return out


def memory_worker(backend: str, settings, n_rows: int, tmp: pathlib.Path) -> dict:
    """Predict ``n_rows`` rows with a tiny model in this (fresh) process; report peak RSS."""
    s = settings
    base, _ = C.synthetic_catalog(s["data_dir"], s["memory_images"], s["memory_size"], n_workers=1)
    catalog = C.repeat_catalog(base[["id_str", "file_loc"]], n_rows)
    if backend == "torch":
        C.setup_torch(s["threads"])
        from zoobot.pytorch.estimators.define_model import ZoobotTree
        from zoobot.pytorch.predictions.predict_on_catalog import predict
    else:
        C.setup_tf(s["threads"])
        from zoobot.tensorflow.estimators.define_model import ZoobotTree
        from zoobot.tensorflow.predictions.predict_on_catalog import predict
    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema

    model = ZoobotTree(schema.n_answers, schema=schema, architecture_name="tiny_cnn", channels=1)
    model.input_size = s["memory_size"]
    if backend == "tf":
        import numpy as np

        model(np.zeros((1, s["memory_size"], s["memory_size"], 1), dtype="float32"), training=False)
    rss_before = C.current_rss_mb()
    peak_before = C.peak_rss_mb()
    save_loc = tmp / "predictions.parquet"
    profile = _PhaseProfile() if s.get("memory_profile") and backend == "torch" else None
    start = time.perf_counter()
    with profile or _nothing():
        out = predict(catalog, model, n_samples=1, save_loc=save_loc)
    elapsed = time.perf_counter() - start
    if out.shape[0] != n_rows or not save_loc.exists():
        raise RuntimeError(f"predict returned {out.shape} for {n_rows} rows")
    return {"rows": n_rows, "seconds": elapsed, "img_per_s": n_rows / elapsed, "rss_before_predict_mb": rss_before,
            "peak_rss_before_predict_mb": peak_before, "peak_rss_mb": C.peak_rss_mb(),
            "peak_rss_children_mb": C.peak_rss_mb(children=True), "output_mb": out.nbytes / 2 ** 20,
            "file_mb": save_loc.stat().st_size / 2 ** 20,
            "call": "predict_on_catalog.predict(catalog, tiny_cnn ZoobotTree, n_samples=1, save_loc=path.parquet)",
            "profile": profile.summary() if profile else None}


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class _PhaseProfile:
    """``--memory-profile`` (PyTorch): the RSS of this process sampled every 10 ms during ``predict``, with
    marks at the runner's phases: the catalog checks (``plan_prediction``), the batch loop (``_collect``,
    the loader's start included) and the final file (``_write_files``). Private names are wrapped on purpose:
    this is a measuring tool, and it fails loudly (AttributeError) if they are renamed."""

    PHASES = (("zoobot.pytorch.predictions.predict_on_catalog", "plan_prediction"),
              ("zoobot.shared.prediction_runner", "_collect"),
              ("zoobot.shared.prediction_runner", "_write_files"))

    def __init__(self):
        self.samples, self.marks, self._stop, self._undo = [], {}, False, []

    def __enter__(self):
        import importlib
        import threading

        for module_name, name in self.PHASES:
            module = importlib.import_module(module_name)
            original = getattr(module, name)
            setattr(module, name, self._marked(name, original))
            self._undo.append((module, name, original))
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        for module, name, original in self._undo:
            setattr(module, name, original)
        return False

    def _sample(self):
        while not self._stop:
            self.samples.append((time.perf_counter(), C.current_rss_mb()))
            time.sleep(0.01)

    def _marked(self, name, function):
        def marked(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.marks[name] = (start, time.perf_counter(), C.current_rss_mb())
        return marked

    def _during(self, name, first=0.0, last=1.0):
        start, stop, _ = self.marks[name]
        length = stop - start
        return sorted(r for t, r in self.samples if start + first * length <= t <= start + last * length) or [None]

    def summary(self) -> dict:
        loop = self._during("_collect")
        def median(values):
            return values[len(values) // 2]
        return {"after_checks_mb": self.marks["plan_prediction"][2], "loop_min_mb": loop[0],
                "loop_median_mb": median(loop), "loop_p99_mb": loop[int(0.99 * (len(loop) - 1))],
                "loop_max_mb": loop[-1], "loop_first10_median_mb": median(self._during("_collect", 0, 0.1)),
                "loop_last10_median_mb": median(self._during("_collect", 0.9, 1)),
                "after_file_mb": self.marks["_write_files"][2], "samples": len(self.samples)}


# ---------------------------------------------------------------------------------------------------------
# engine axis (issue 16): PyTorch vs ONNX Runtime, one process per channel count
# ---------------------------------------------------------------------------------------------------------


def _best_rate(fn, repeats: int, warmup: int) -> dict:
    return C.measure(fn, repeats, warmup)


def _max_relative(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _decode_rates(catalog, plan, settings) -> dict:
    """Images/s of reading + preprocessing alone: threads (as predict reads), one thread, a process pool."""
    import concurrent.futures

    from zoobot.onnx.images import BatchReader, prepare_image

    locs, ids = catalog["file_loc"].tolist(), catalog["id_str"].tolist()

    def threads(n):
        def run():
            for _ in BatchReader(locs, ids, plan, settings["batch_size"], n):
                pass
            return len(locs)
        return run

    def processes():
        with concurrent.futures.ProcessPoolExecutor(settings["threads"]) as pool:
            for _ in pool.map(prepare_image, locs, [plan] * len(locs), chunksize=8):
                pass
        return len(locs)

    return {"threads": _best_rate(threads(settings["threads"]), settings["repeats"], settings["warmup"]),
            "one_thread": _best_rate(threads(0), settings["repeats"], settings["warmup"]),
            "processes": _best_rate(processes, settings["repeats"], settings["warmup"])}


def engines_worker(settings, catalog, tmp: pathlib.Path, channels: int) -> dict:
    """Forward ceilings, decode ceiling and end-to-end prediction of both engines, in this process."""
    import numpy as np

    torch = C.setup_torch(settings["threads"])
    from zoobot.onnx import OnnxModel
    from zoobot.onnx import predict as onnx_predict
    from zoobot.onnx.images import ImagePlan
    from zoobot.pytorch.estimators.define_model import ZoobotTree
    from zoobot.pytorch.onnx_export import export_onnx
    from zoobot.pytorch.predictions.predict_on_catalog import predict as torch_predict
    from zoobot.shared.preprocessing import Preprocessing, carry_record
    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema

    s, size, batch = settings, settings["image_size"], settings["batch_size"]
    torch.manual_seed(0)
    model = ZoobotTree(schema.n_answers, schema=schema, architecture_name=s["architecture"], channels=channels)
    carry_record(model, Preprocessing(input_size=size, channels=channels, crop_scale_bounds=(0.7, 0.8),
                                      crop_ratio_bounds=(0.9, 1.1), image_formats=("jpg",)))
    model.eval()
    path = export_onnx(model, tmp / "model.onnx")
    onnx_model = OnnxModel(path, num_threads=s["threads"])
    x = torch.rand(batch, channels, size, size)
    ones = np.ones((1, batch, onnx_model.encoder_dim), np.float32)

    def torch_forward():  # what predict runs per batch: channels_last encoder, head, no dropout
        with torch.inference_mode(), model._mc_dropout(False):
            model(x)
        return batch

    def onnx_forward():
        onnx_model.session.run(["predictions"], {"image": x.numpy(), "dropout_mask": ones})
        return batch

    with torch.inference_mode(), model._mc_dropout(False):
        reference = model(x).numpy()
    forward_diff = _max_relative(onnx_model.session.run(["predictions"], {"image": x.numpy(),
                                                                          "dropout_mask": ones})[0][..., 0], reference)
    out = {"channels": channels,
           "forward": {"torch": _best_rate(torch_forward, s["repeats"], s["warmup"]),
                       "onnx": _best_rate(onnx_forward, s["repeats"], s["warmup"])},
           "forward_max_relative_difference": forward_diff}
    plan = ImagePlan(channels, size, (0.7, 0.8), "NCHW")
    out["decode"] = _decode_rates(catalog, plan, s)

    def run_torch():
        torch_predict(catalog, model, save_loc=tmp / "torch.parquet", test_time_dropout=False,
                      datamodule_kwargs={"batch_size": batch, "num_workers": s["num_workers"]})
        return len(catalog)

    def run_onnx():
        onnx_predict(catalog, onnx_model, save_loc=tmp / "onnx.parquet", test_time_dropout=False, batch_size=batch,
                     num_workers=s["threads"])
        return len(catalog)

    out["end_to_end"] = {"torch": _best_rate(run_torch, s["repeats"], s["warmup"]),
                         "onnx": _best_rate(run_onnx, s["repeats"], s["warmup"])}
    from zoobot.shared.load_predictions import load

    out["end_to_end_max_relative_difference"] = _max_relative(load(tmp / "onnx.parquet")[1],
                                                             load(tmp / "torch.parquet")[1])
    out["calls"] = {"torch": f"predict_on_catalog.predict(catalog, model, save_loc=.parquet, test_time_dropout=False, "
                             f"datamodule_kwargs={{'batch_size': {batch}, 'num_workers': {s['num_workers']}}})",
                    "onnx": f"zoobot.onnx.predict(catalog, 'model.onnx', save_loc=.parquet, test_time_dropout=False, "
                            f"batch_size={batch}, num_workers={s['threads']}) with num_threads={s['threads']}"}
    return out


def engine_table(runs: list) -> list:
    rows = []
    for r in runs:
        med = {k: v["median"] for k, v in r["forward"].items()}
        e2e = {k: v["median"] for k, v in r["end_to_end"].items()}
        decode = r["decode"]["threads"]["median"]
        rows.append([r["channels"], med["torch"], med["onnx"], r["forward_max_relative_difference"], decode,
                     r["decode"]["one_thread"]["median"], r["decode"]["processes"]["median"], e2e["torch"],
                     e2e["onnx"], e2e["onnx"] / e2e["torch"], e2e["onnx"] / min(decode, med["onnx"]),
                     r["end_to_end_max_relative_difference"]])
    return rows


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=None, help="catalog rows of the speed part (default 192; quick 16)")
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers (default: --threads)")
    parser.add_argument("--memory-rows", default=None,
                        help="comma-separated catalog sizes of the memory part (default 1000,10000,100000; "
                             "quick 64,128,256)")
    parser.add_argument("--skip-speed", action="store_true", help="only the memory part")
    parser.add_argument("--skip-memory", action="store_true", help="only the speed part")
    parser.add_argument("--memory-rows-worker", type=int, default=None, help="(internal) one memory run")
    parser.add_argument("--memory-profile", action="store_true",
                        help="memory part, PyTorch: also sample the RSS every 10 ms and report it per phase of predict")
    parser.add_argument("--engines", default=None,
                        help="engine axis: 'torch,onnx' compares PyTorch and ONNX Runtime (forward ceilings, decode "
                             "ceiling, end to end), one process per --channels value")
    parser.add_argument("--channels", default="1,3", help="channel counts of the engine axis")
    parser.add_argument("--channels-worker", type=int, default=None, help="(internal) one engine-axis run")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    settings["n_images"] = args.n_images or (16 if args.quick else 192)
    settings["num_workers"] = args.threads if args.num_workers is None else args.num_workers
    settings["memory_rows"] = [int(v) for v in (args.memory_rows or ("64,128,256" if args.quick
                                                                      else "1000,10000,100000")).split(",")]
    settings["memory_images"] = 32 if args.quick else 300
    settings["memory_size"] = 32 if args.quick else 64
    settings["memory_profile"] = bool(args.memory_profile)
    peer = None if args.worker else C.check_peer_python(args.peer_python)

    if args.worker:
        with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
            tmp = pathlib.Path(tmp)
            if args.memory_rows_worker is not None:
                result = memory_worker(args.worker, settings, args.memory_rows_worker, tmp)
            elif args.channels_worker is not None:
                catalog, _ = C.synthetic_catalog(settings["data_dir"], settings["n_images"], settings["source_size"])
                result = engines_worker(settings, catalog[["id_str", "file_loc"]], tmp, args.channels_worker)
            else:
                catalog, _ = C.synthetic_catalog(settings["data_dir"], settings["n_images"], settings["source_size"])
                work = torch_speed if args.worker == "torch" else tf_speed
                result = work(settings, catalog[["id_str", "file_loc"]], tmp)
            C.write_worker_result(args.worker_out, result)
        return {}

    results, tables = {}, {}
    names = {"torch": "PyTorch", "tf": "TensorFlow", "peer": "upstream (peer env)"}
    if not args.skip_speed:
        catalog, _ = C.synthetic_catalog(settings["data_dir"], settings["n_images"], settings["source_size"],
                                         n_workers=settings["threads"])
        speed = {b: C.run_worker(__file__, b, argv, settings["threads"]) for b in settings["backends"]}
        if peer:
            speed["peer"] = C.run_peer(peer, "predict", dict(
                settings, catalog=catalog[["id_str", "file_loc"]].to_dict(orient="list"), samples=list(SAMPLES)))
        results["speed"] = speed
        rows = []
        for backend, r in speed.items():
            if "n_samples_1" not in r:
                continue
            forward = r.get("ceiling", {}).get("eval")
            n1, n5 = r["n_samples_1"], r.get("n_samples_5")  # upstream's predict has no n_samples: n1 only
            rows.append([names[backend], n1, n5, forward, r.get("ceiling", {}).get("model_eval"),
                         C.ratio(n1, forward), n1.get("paired_ceiling"), n1.get("ratio_to_paired_ceiling"),
                         C.ratio(n5["seconds"], n1["seconds"]) if n5 else None, n1.get("per_cpu_second")])
        title = (f"Predictions from {settings['source_size']} px jpgs to parquet: {settings['architecture']}, "
                 f"{settings['image_size']} px, greyscale, batch {settings['batch_size']}, {settings['n_images']} "
                 f"galaxies, {settings['threads']} threads, {settings['num_workers']} loader workers")
        tables[title] = C.markdown_table(
            ["backend", "n_samples=1 img/s", "n_samples=5 img/s", "encoder fwd ceiling img/s (before)",
             "whole-model fwd img/s", "n1 / ceiling", "paired ceiling img/s", "n1 / paired ceiling",
             "time n5 / time n1", "n1 img per CPU-s of the process"], rows)

    if not args.skip_memory:
        memory = {}
        for backend in settings["backends"]:
            memory[backend] = []
            C.synthetic_catalog(settings["data_dir"], settings["memory_images"], settings["memory_size"])
            for n_rows in settings["memory_rows"]:
                memory[backend].append(C.run_worker(__file__, backend, argv, settings["threads"],
                                                    extra=["--memory-rows-worker", str(n_rows)]))
        results["memory"] = memory
        rows = []
        for backend, runs in memory.items():
            for run, previous in zip(runs, [None] + runs[:-1]):
                growth = None if previous is None else run["peak_rss_mb"] / previous["peak_rss_mb"] - 1
                rows.append([names[backend], run["rows"], run["img_per_s"], run["rss_before_predict_mb"],
                             run["peak_rss_mb"], run["peak_rss_mb"] - run["rss_before_predict_mb"], growth,
                             run["peak_rss_children_mb"], run["output_mb"]])
        title = (f"Peak memory of predict (tiny_cnn, {settings['memory_size']} px jpgs cycling through "
                 f"{settings['memory_images']} files, unique id_str per row, default loader settings, save_loc parquet)")
        tables[title] = C.markdown_table(
            ["backend", "rows", "img/s", "RSS before predict MiB", "peak RSS MiB", "peak - before MiB",
             "peak growth vs previous size", "largest loader child MiB", "returned array MiB"], rows)
        profiled = [(names[b], run) for b, runs in memory.items() for run in runs if run.get("profile")]
        if profiled:
            keys = ("after_checks_mb", "loop_min_mb", "loop_median_mb", "loop_first10_median_mb",
                    "loop_last10_median_mb", "loop_p99_mb", "loop_max_mb", "after_file_mb")
            tables["RSS of predict per phase, MiB (sampled every 10 ms; loop = the batch loop)"] = C.markdown_table(
                ["backend", "rows", "before predict", "after catalog checks", "loop min", "loop median",
                 "loop median, first 10 %", "loop median, last 10 %", "loop p99", "loop max", "after final file",
                 "peak (ru_maxrss)"],
                [[name, run["rows"], run["rss_before_predict_mb"], *[run["profile"][k] for k in keys],
                  run["peak_rss_mb"]] for name, run in profiled])
    if args.engines:
        if sorted(e.strip() for e in args.engines.split(",")) != ["onnx", "torch"]:
            C.usage_error(f"--engines: only 'torch,onnx' is measured, got {args.engines!r}")
        C.synthetic_catalog(settings["data_dir"], settings["n_images"], settings["source_size"],
                            n_workers=settings["threads"])
        runs = [C.run_worker(__file__, "torch", argv, settings["threads"], extra=["--channels-worker", c.strip()])
                for c in args.channels.split(",")]
        results["engines"] = runs
        title = (f"Engines: PyTorch vs ONNX Runtime, {settings['architecture']} {settings['image_size']} px, batch "
                 f"{settings['batch_size']}, {settings['threads']} threads, {settings['n_images']} jpgs of "
                 f"{settings['source_size']} px -> parquet (img/s, medians)")
        tables[title] = C.markdown_table(
            ["channels", "PyTorch fwd", "ONNX fwd", "fwd max rel diff", "decode ceiling (threads)",
             "decode, 1 thread", "decode, process pool", "PyTorch predict e2e", "ONNX predict e2e",
             "ONNX e2e / PyTorch e2e", "ONNX e2e / min(decode, ONNX fwd)", "e2e max rel diff"],
            engine_table(runs))
    notes = ["paired ceiling = the encoder forward measured right before each timed predict call; n1 / paired "
             "ceiling = median of the per-call ratios (robust to load that changes during the run); CPU-s of the "
             "predicting process exclude PyTorch loader workers but include TensorFlow's tf.data threads",
             "targets (issue 7): n_samples=1 >= 0.8 x forward ceiling; time(n_samples=5) <= 1.3 x time(n_samples=1); "
             "peak RSS grows < 10% from 10k to 100k rows",
             "each memory size runs in a fresh process; peak RSS = ru_maxrss of that process (loader worker "
             "processes are reported separately as the largest child)"]
    if peer and "error" in results.get("speed", {}).get("peer", {}):
        notes.append(f"peer run failed: {results['speed']['peer']['error']}")
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
