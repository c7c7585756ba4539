"""Workload 1: the raw ceiling - encoder forward+backward and forward-only images/s on random tensors.

Every other benchmark measures its own ceiling in the same run with the same helpers
(``_common.torch_encoder_rates`` / ``tf_encoder_rates``); this script compares the variants side by
side: PyTorch NCHW, PyTorch channels_last, Keras 3 / TensorFlow - same architecture, batch, size,
channels and threads, each backend in its own process.

    .venv/bin/python benchmarks/bench_ceiling.py                 # 224 px EfficientNet-B0, batch 32, 2 threads
    .venv/bin/python benchmarks/bench_ceiling.py --quick         # tiny_cnn at 32 px (seconds)
    .venv/bin/python benchmarks/bench_ceiling.py --channels 3 --threads 1
"""
from __future__ import annotations

import sys

import _common as C


def worker(args, settings) -> dict:
    s = settings
    if args.worker == "torch":
        C.setup_torch(s["threads"])
        out = {}
        for memory_format in ("contiguous", "channels_last"):
            out[memory_format] = C.torch_encoder_rates(s["architecture"], args.channels, s["image_size"],
                                                       s["batch_size"], s["repeats"], s["warmup"],
                                                       memory_format=memory_format)
        return out
    C.setup_tf(s["threads"])
    return {"keras": C.strip_private(C.tf_encoder_rates(s["architecture"], args.channels, s["image_size"],
                                                          s["batch_size"], s["repeats"], s["warmup"]))}


def peer_spec(settings, args) -> dict:
    return dict(architecture=settings["architecture"], channels=args.channels, image_size=settings["image_size"],
                batch_size=settings["batch_size"], repeats=settings["repeats"], warmup=settings["warmup"],
                threads=settings["threads"])


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3),
                        help="input channels (1 = greyscale, the train() default)")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    if args.worker:
        C.write_worker_result(args.worker_out, worker(args, settings))
        return {}
    peer = C.check_peer_python(args.peer_python)  # before any work
    settings["channels"] = args.channels

    results = {}
    for backend in settings["backends"]:
        results[backend] = C.run_worker(__file__, backend, argv, settings["threads"])
    rows = []
    variants = [("PyTorch NCHW", results.get("torch", {}).get("contiguous")),
                ("PyTorch channels_last", results.get("torch", {}).get("channels_last")),
                ("Keras 3 / TF", results.get("tf", {}).get("keras"))]
    if peer:
        results["peer"] = C.run_peer(peer, "ceiling", peer_spec(settings, args))
        variants.append((f"upstream env ({results['peer'].get('versions', {}).get('torch', '?')}) NCHW",
                         results["peer"].get("contiguous")))
        variants.append(("upstream env channels_last", results["peer"].get("channels_last")))
    best_train = max((v["train"]["median"] for _, v in variants if v and "train" in v), default=None)
    best_eval = max((v["eval"]["median"] for _, v in variants if v and "eval" in v), default=None)
    for name, value in variants:
        if not value:
            continue
        train, evaluate = value.get("train"), value.get("eval")
        rows.append([name, train, evaluate, C.ratio(train, best_train), C.ratio(evaluate, best_eval),
                     (train or {}).get("median", 0) / settings["threads"] if train else None,
                     (evaluate or {}).get("median", 0) / settings["threads"] if evaluate else None])
    title = (f"Encoder ceiling: {settings['architecture']}, {settings['image_size']} px, {args.channels} channel(s), "
             f"batch {settings['batch_size']}, {settings['threads']} threads (img/s, median (min-max))")
    tables = {title: C.markdown_table(
        ["variant", "fwd+bwd img/s", "fwd img/s", "fwd+bwd / best", "fwd / best", "fwd+bwd per thread",
         "fwd per thread"], rows)}
    notes = ["random tensors already in memory; fwd+bwd = gradients of features.sum() w.r.t. every weight "
             "(no optimiser step); fwd = inference mode / compiled tf.function"]
    if peer and "error" in results["peer"]:
        notes.append(f"peer run failed: {results['peer']['error']}")
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
