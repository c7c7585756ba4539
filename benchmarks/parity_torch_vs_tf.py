"""Backend parity report: do the PyTorch and TensorFlow backends compute the same things, at what speed?

Each backend runs in its own process and writes what it computes; this script compares them:

1. encoders: trainable parameter count and output width of ``tiny_cnn`` and ``--architecture``
   (the same architecture must have the same size in both backends);
2. the loss: ``calculate_multiquestion_loss`` per galaxy and question on random vote counts and
   concentrations of the DECaLS DR5 tree, against the float64 oracle
   ``zoobot.shared.losses_reference.dirichlet_multinomial_nll``;
3. the deterministic evaluation transform: the same jpgs decoded, centre-cropped and resized by each
   backend's ``EvalTransform`` (max absolute pixel difference, in [0, 1] units);
4. speed: encoder forward+backward and forward images/s on random tensors (same architecture, batch,
   size, threads), and the TensorFlow / PyTorch ratio.

    .venv/bin/python benchmarks/parity_torch_vs_tf.py           # 224 px EfficientNet-B0, batch 32, 2 threads
    .venv/bin/python benchmarks/parity_torch_vs_tf.py --quick
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import _common as C

N_GALAXIES = 64
N_IMAGES = 8


def _loss_inputs():
    import numpy as np

    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 12, (N_GALAXIES, schema.n_answers)).astype(np.float32)
    counts[:4, :] = 0  # galaxies without votes: zero loss exactly
    concentrations = (1 + 100 * rng.random((N_GALAXIES, schema.n_answers))).astype(np.float32)
    return schema, counts, concentrations


def torch_worker(settings, exchange: pathlib.Path) -> dict:
    s = settings
    torch = C.setup_torch(s["threads"])
    import numpy as np

    from zoobot.pytorch.datasets.transforms import EvalTransform
    from zoobot.pytorch.estimators.define_model import get_pytorch_encoder
    from zoobot.pytorch.training.losses import calculate_multiquestion_loss
    from zoobot.shared.images import load_image

    encoders = {}
    for name in dict.fromkeys(["tiny_cnn", s["architecture"]]):
        encoder = get_pytorch_encoder(name, channels=1)
        with torch.no_grad():
            width = int(encoder(torch.zeros(1, 1, 64, 64)).shape[-1])
        encoders[name] = {"trainable_params": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
                          "output_dim": width}
    schema, counts, concentrations = _loss_inputs()
    loss = calculate_multiquestion_loss(torch.from_numpy(counts), torch.from_numpy(concentrations),
                                        schema.question_index_groups)
    np.save(exchange / "loss_torch.npy", loss.double().numpy())
    transform = EvalTransform(1, s["image_size"])
    images = [transform(load_image(p)).permute(1, 2, 0).numpy() for p in s["paths"]]
    np.save(exchange / "images_torch.npy", np.stack(images))
    speed = {} if s["skip_speed"] else C.torch_encoder_rates(
        s["architecture"], 1, s["image_size"], s["batch_size"], s["repeats"], s["warmup"], memory_format="channels_last")
    return {"encoders": encoders, "speed": speed}


def tf_worker(settings, exchange: pathlib.Path) -> dict:
    s = settings
    tf = C.setup_tf(s["threads"])
    import numpy as np

    from zoobot.tensorflow.data_utils.image_datasets import read_image_file
    from zoobot.tensorflow.datasets.transforms import EvalTransform
    from zoobot.tensorflow.estimators.define_model import get_encoder as get_tensorflow_encoder
    from zoobot.tensorflow.training.losses import calculate_multiquestion_loss

    encoders = {}
    for name in dict.fromkeys(["tiny_cnn", s["architecture"]]):
        encoder = get_tensorflow_encoder(name, channels=1)
        width = int(encoder(tf.zeros((1, 64, 64, 1)), training=False).shape[-1])
        encoders[name] = {"trainable_params": int(sum(int(np.prod(v.shape)) for v in encoder.trainable_variables)),
                          "output_dim": width}
    schema, counts, concentrations = _loss_inputs()
    loss = calculate_multiquestion_loss(tf.constant(counts), tf.constant(concentrations), schema.question_index_groups)
    np.save(exchange / "loss_tf.npy", np.asarray(loss, dtype=np.float64))
    transform = EvalTransform(1, s["image_size"])
    images = [transform(read_image_file(p, channels=3)).numpy() for p in s["paths"]]
    np.save(exchange / "images_tf.npy", np.stack(images))
    speed = {} if s["skip_speed"] else C.strip_private(C.tf_encoder_rates(
        s["architecture"], 1, s["image_size"], s["batch_size"], s["repeats"], s["warmup"]))
    return {"encoders": encoders, "speed": speed}


def compare(exchange: pathlib.Path) -> dict:
    import numpy as np

    from zoobot.shared.losses_reference import dirichlet_multinomial_nll

    schema, counts, concentrations = _loss_inputs()
    oracle = dirichlet_multinomial_nll(counts.astype(np.float64), concentrations.astype(np.float64),
                                       schema.question_index_groups)
    out = {}
    for backend in ("torch", "tf"):
        path = exchange / f"loss_{backend}.npy"
        if path.exists():
            loss = np.load(path)
            out[f"loss_{backend}_vs_oracle_max_rel"] = float(np.max(np.abs(loss - oracle) / np.maximum(np.abs(oracle), 1e-6)))
            out[f"loss_{backend}_zero_vote_rows_max_abs"] = float(np.max(np.abs(loss[:4])))
    if (exchange / "loss_torch.npy").exists() and (exchange / "loss_tf.npy").exists():
        a, b = np.load(exchange / "loss_torch.npy"), np.load(exchange / "loss_tf.npy")
        out["loss_torch_vs_tf_max_abs"] = float(np.max(np.abs(a - b)))
        x, y = np.load(exchange / "images_torch.npy"), np.load(exchange / "images_tf.npy")
        out["eval_transform_shapes"] = [list(x.shape), list(y.shape)]
        out["eval_transform_max_abs_diff"] = float(np.max(np.abs(x - y))) if x.shape == y.shape else None
        out["eval_transform_mean_abs_diff"] = float(np.mean(np.abs(x - y))) if x.shape == y.shape else None
    return out


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-speed", action="store_true",
                        help="skip the speed comparison (bench_ceiling.py measures the same, in more detail)")
    parser.add_argument("--exchange-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    settings["skip_speed"] = bool(args.skip_speed)
    peer = None if args.worker else C.check_peer_python(args.peer_python)
    catalog, _ = C.synthetic_catalog(settings["data_dir"], N_IMAGES, settings["source_size"], label="ring")
    settings["paths"] = catalog["file_loc"].tolist()
    if args.worker:
        work = torch_worker if args.worker == "torch" else tf_worker
        C.write_worker_result(args.worker_out, work(settings, pathlib.Path(args.exchange_dir)))
        return {}

    with tempfile.TemporaryDirectory(prefix="parity_") as exchange:
        results = {b: C.run_worker(__file__, b, argv, settings["threads"], extra=["--exchange-dir", exchange])
                   for b in settings["backends"]}
        results["comparison"] = compare(pathlib.Path(exchange))
    notes = []
    if peer:
        results["peer"] = {"error": "parity compares this project's two backends; use bench_train/bench_predict/"
                                    "bench_ceiling --peer-python for upstream side-by-side runs"}
        notes.append(f"peer: {results['peer']['error']}")
    tables = {}
    torch_r, tf_r, comparison = results.get("torch", {}), results.get("tf", {}), results["comparison"]
    rows = []
    for name in dict.fromkeys(["tiny_cnn", settings["architecture"]]):
        t, k = torch_r.get("encoders", {}).get(name, {}), tf_r.get("encoders", {}).get(name, {})
        rows.append([f"{name} trainable parameters", t.get("trainable_params"), k.get("trainable_params"),
                     "equal" if t and k and t["trainable_params"] == k["trainable_params"] else "DIFFERENT"])
        rows.append([f"{name} output width", t.get("output_dim"), k.get("output_dim"),
                     "equal" if t and k and t["output_dim"] == k["output_dim"] else "DIFFERENT"])
    rows.append(["loss vs float64 oracle, max relative error", comparison.get("loss_torch_vs_oracle_max_rel"),
                 comparison.get("loss_tf_vs_oracle_max_rel"),
                 f"PyTorch vs TF max abs {C.fmt(comparison.get('loss_torch_vs_tf_max_abs'))}"])
    rows.append(["loss of zero-vote galaxies, max abs value", comparison.get("loss_torch_zero_vote_rows_max_abs"),
                 comparison.get("loss_tf_zero_vote_rows_max_abs"), "must be 0"])
    rows.append([f"EvalTransform output on {N_IMAGES} jpgs, [0, 1] pixels", "-", "-",
                 f"max abs diff {C.fmt(comparison.get('eval_transform_max_abs_diff'))}, mean "
                 f"{C.fmt(comparison.get('eval_transform_mean_abs_diff'))}"])
    tables["Parity of the two backends"] = C.markdown_table(["check", "PyTorch", "TensorFlow", "comparison"], rows)
    speed_rows = []
    for mode, label in (("train", "fwd+bwd"), ("eval", "fwd")):
        t = torch_r.get("speed", {}).get(mode)
        k = tf_r.get("speed", {}).get(mode)
        if t or k:
            speed_rows.append([label, t, k, C.ratio(k, t)])
    if speed_rows:
        tables[(f"Encoder speed, {settings['architecture']} {settings['image_size']} px greyscale, batch "
            f"{settings['batch_size']}, {settings['threads']} threads (PyTorch channels_last)")] = C.markdown_table(
            ["pass", "PyTorch img/s", "TensorFlow img/s", "TF / PyTorch"], speed_rows)
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
