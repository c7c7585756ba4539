"""Issue 13: how good are the predictions? ``train()`` in each backend, scored against known truth.

Not a speed benchmark: the science one. Four synthetic sets from :mod:`zoobot.shared.synthetic`
(GZ DECaLS DR5 tree, 40 volunteers for 70 % of galaxies and 5 for the rest, jpgs of ``--image-size``):
train (2000), validation (500), an in-distribution test set (1000) and a shifted test set (1000,
``prior='shifted'``: smaller, fainter, blurrier galaxies, more mergers). Each backend, in its own process:

1. calls ``train()`` exactly as a user does with its defaults plus ``model_architecture``, ``color=True``,
   ``batch_size``, ``epochs``, ``resize_size`` (and ``--train-kwargs``), timing the call (wall time);
2. predicts validation and both test sets with ``predict_on_catalog.predict`` (one deterministic pass:
   ``test_time_dropout=False``, ``calibrate=False`` - the raw concentrations).

The parent then scores the raw and the calibrated concentrations (a per-question concentration scale
fitted to the validation votes by maximum likelihood, :mod:`zoobot.shared.calibration`; the scale the
checkpoint itself stores is reported too) per question and pooled:

- reach-weighted mean absolute error of the vote fractions against the true answer probabilities;
- coverage of the true probabilities by the 90 % central interval of each answer's Beta marginal;
- Dirichlet-multinomial negative log-likelihood per vote of the test votes, next to the baselines: a
  constant Dirichlet fitted to the training votes, the training-mean multinomial, and the multinomial
  of the true probabilities (the "truth" row: what no model can beat on average).

    .venv/bin/python benchmarks/bench_science.py --data-dir /work/cache/science   # 64 px, b0, 15 epochs
    .venv/bin/python benchmarks/bench_science.py --quick                          # tiny_cnn, seconds
    .venv/bin/python benchmarks/bench_science.py --data-dir /work/cache/science --ceiling   # no training

``--ceiling`` trains nothing: it regenerates each galaxy's latent parameters and fits scikit-learn regressions
from them (perfect perception) and from pixel statistics of the jpgs to the training votes, to show what limits
a model of these sets (docs/benchmarks.md section 9). ``--tta N`` adds a row of test-time augmentation;
``--ema DECAY`` trains with an exponential moving average of the weights (PyTorch).
"""
from __future__ import annotations

import inspect
import json
import pathlib
import sys
import tempfile
import time

import _common as C

#: split -> (galaxies, seed, prior); quick mode uses ``QUICK_SIZES`` galaxies instead.
SPLITS = {"train": (2000, 101, "train"), "val": (500, 102, "train"), "test": (1000, 103, "train"),
          "shifted": (1000, 104, "shifted")}
QUICK_SIZES = {"train": 48, "val": 24, "test": 24, "shifted": 24}
EVAL_SPLITS = ("val", "test", "shifted")
SCIENCE_FULL = dict(image_size=64, architecture="efficientnet_b0", batch_size=32, source_size=64, epochs=15)
SCIENCE_QUICK = dict(image_size=32, architecture="tiny_cnn", batch_size=8, source_size=32, epochs=1)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------

def science_catalogs(settings) -> dict:
    """The four catalogs (generated once into ``--data-dir``, then reused)."""
    import pandas as pd

    from zoobot.shared.synthetic import GENERATOR_VERSION, make_synthetic_catalog

    catalogs = {}
    for name, (n, seed, prior) in SPLITS.items():
        n = QUICK_SIZES[name] if settings["quick"] else n
        root = pathlib.Path(settings["data_dir"]) / (
            f"{name}_n{n}_s{settings['source_size']}_seed{seed}_{prior}_{GENERATOR_VERSION}")
        done = root / "done.json"
        if done.exists():
            catalogs[name] = pd.read_parquet(root / "catalog.parquet")
            continue
        catalog, label_cols = make_synthetic_catalog(root, n_galaxies=n, image_size=settings["source_size"],
                                                     seed=seed, prior=prior, n_workers=settings["threads"],
                                                     progress=False)
        done.write_text(json.dumps({"label_cols": list(label_cols)}))
        catalogs[name] = catalog
    return catalogs


# ------------------------------------------------------------------------------------------------
# workers: train and predict in one backend
# ------------------------------------------------------------------------------------------------

def _train_kwargs(settings) -> dict:
    kwargs = dict(model_architecture=settings["architecture"], color=True, batch_size=settings["batch_size"],
                  epochs=settings["epochs"], resize_size=settings["image_size"], gpus=0,
                  num_workers=settings["threads"])
    kwargs.update(settings["train_kwargs"])
    return kwargs


def _ema_callbacks(backend: str, decay) -> list:
    """``--ema DECAY``: an exponential moving average of the weights, used for validation, checkpoints and the
    returned model (PyTorch: Lightning's ``EMAWeightAveraging``); an empty list without it."""
    if decay is None:
        return []
    if backend != "torch":
        raise SystemExit("--ema is implemented for the torch backend only")
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return [EMAWeightAveraging(decay=float(decay))]


def _predict_raw(predict, catalog, model, tta: int = 0) -> list:
    """One deterministic pass; raw (uncalibrated) concentrations where ``predict`` can calibrate. With ``tta``
    > 0: the mean concentrations of ``tta`` passes through the random training augmentations instead."""
    options = {"test_time_dropout": False}
    if "calibrate" in inspect.signature(predict).parameters:
        options["calibrate"] = False
    if tta:
        samples = predict(catalog[["id_str", "file_loc"]], model, n_samples=tta, test_time_augmentation=True,
                          **options)
        return samples.mean(axis=-1).tolist()
    return predict(catalog[["id_str", "file_loc"]], model, n_samples=1, **options)[..., 0].tolist()


def _run_backend(train, predict, settings, catalogs, save_dir, backend) -> dict:
    from zoobot.shared.schemas import decals_dr5_ortho_schema

    kwargs = _train_kwargs(settings)
    callbacks = _ema_callbacks(backend, settings.get("ema"))
    if callbacks:
        kwargs["extra_callbacks"] = callbacks
    start, cpu_start = time.perf_counter(), time.process_time()
    model, _ = train(save_dir, decals_dr5_ortho_schema, train_catalog=catalogs["train"],
                     val_catalog=catalogs["val"], **kwargs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    epochs_run = _epochs_run(pathlib.Path(save_dir))
    concentrations = {split: _predict_raw(predict, catalogs[split], model) for split in EVAL_SPLITS}
    tta = settings.get("tta") or 0
    tta_concentrations = ({split: _predict_raw(predict, catalogs[split], model, tta) for split in EVAL_SPLITS}
                          if tta else None)
    scale = getattr(model, "concentration_scale", None)
    kwargs.pop("extra_callbacks", None)
    return {"train_wall_s": wall, "train_cpu_s": cpu, "epochs_run": epochs_run, "train_kwargs": kwargs,
            "ema": settings.get("ema"), "stored_scale": None if scale is None else [float(s) for s in scale],
            "_concentrations": concentrations, "_tta_concentrations": tta_concentrations}


def _epochs_run(save_dir: pathlib.Path):
    import csv

    metrics = save_dir / "logs" / "metrics.csv"
    if not metrics.exists():
        return None
    epochs = [row.get("epoch") for row in csv.DictReader(open(metrics))]
    epochs = [float(e) for e in epochs if e not in (None, "")]
    return int(max(epochs)) + 1 if epochs else None


def torch_worker(settings, catalogs, save_dir) -> dict:
    C.setup_torch(settings["threads"])
    from zoobot.pytorch.predictions.predict_on_catalog import predict
    from zoobot.pytorch.training.train_with_pytorch_lightning import train

    return _run_backend(train, predict, settings, catalogs, save_dir, "torch")


def tf_worker(settings, catalogs, save_dir) -> dict:
    C.setup_tf(settings["threads"])
    from zoobot.tensorflow.predictions.predict_on_catalog import predict
    from zoobot.tensorflow.training.train_with_keras import train

    return _run_backend(train, predict, settings, catalogs, save_dir, "tf")


# ------------------------------------------------------------------------------------------------
# scoring (framework-free)
# ------------------------------------------------------------------------------------------------

def score(catalogs, concentrations: dict, schema) -> dict:
    """Metrics of one run's raw and validation-calibrated concentrations on both test sets."""
    import numpy as np

    from zoobot.shared import calibration
    from zoobot.shared.metrics import vote_counts

    raw = {split: np.asarray(v, dtype=np.float64) for split, v in concentrations.items()}
    scale = calibration.fit_concentration_scale(vote_counts(catalogs["val"], schema), raw["val"], schema)
    out = {"fitted_scale": scale.tolist()}
    for split in ("test", "shifted"):
        calibrated = calibration.apply_concentration_scale(raw[split], scale, schema)
        out[split] = {"raw": evaluate(catalogs, split, raw[split], schema)["model"],
                      "calibrated": evaluate(catalogs, split, calibrated, schema)["model"]}
    return out


#: our names of zoobot.shared.metrics.evaluate_predictions' columns
COLUMNS = {"truth_mae": "mae", "truth_coverage": "coverage90", "nll_dirichlet_multinomial": "dm_nll",
           "nll_multinomial": "multinomial_nll", "vote_coverage": "vote_coverage90"}


def evaluate(catalogs, split, alpha, schema) -> dict:
    """``zoobot.shared.metrics.evaluate_predictions`` of ``alpha`` on ``catalogs[split]``, with the baselines
    fitted to the training votes: {predictor: {'pooled': {...}, 'per_question': {question: {...}}}}."""
    from zoobot.shared.metrics import evaluate_predictions

    table = evaluate_predictions(catalogs[split], alpha, schema, train_catalog=catalogs["train"], interval_width=0.9)
    out = {}
    for predictor, rows in table.groupby("predictor", sort=False):
        records = {row["question"]: {ours: _number(row[theirs]) for theirs, ours in COLUMNS.items()}
                   for _, row in rows.iterrows()}
        out[predictor] = {"pooled": records.pop("pooled"), "per_question": records}
    return out


def _number(value):
    value = float(value)
    return None if value != value else value  # NaN (metric does not apply) -> None


def baselines(catalogs, schema) -> dict:
    """The train-mean and constant-Dirichlet rows and the truth row, on both test sets (their scores do
    not depend on the model)."""
    import numpy as np

    out = {}
    for split in ("test", "shifted"):
        dummy = np.ones((len(catalogs[split]), schema.n_answers))
        scored = evaluate(catalogs, split, dummy, schema)
        out[split] = {name: scored[name] for name in ("constant_dirichlet", "train_mean", "truth")}
    return out


# ------------------------------------------------------------------------------------------------
# ceilings (--ceiling): how much of the truth is learnable from 2,000 galaxies' votes, and from what
# ------------------------------------------------------------------------------------------------

#: what ``galaxy_features`` says a volunteer sees (zoobot.shared.synthetic.answers), plus size, S/N and PSF
_LATENT_FEATURES = ("v", "is_disk", "cos_i", "fade", "bt", "q_proj", "edge_on", "arm_vis", "bar_vis", "ring_vis",
                    "boxy", "stage", "clump_vis", "small")


def latent_features(catalog, split: str):
    """(galaxy, feature) latent parameters of a bench split, regenerated galaxy by galaxy from its seed (the
    generator is deterministic per galaxy; checked against the catalog's true probabilities)."""
    import numpy as np

    from zoobot.shared.metrics import true_probabilities
    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema
    from zoobot.shared.synthetic import synthetic_galaxy
    from zoobot.shared.synthetic.answers import galaxy_features

    _, seed, prior = SPLITS[split]
    rows, probs = [], []
    for index in range(len(catalog)):
        galaxy = synthetic_galaxy(index, seed=seed, image_size=8, schema=schema, prior=prior)  # latents only matter
        f, lat = galaxy_features(galaxy.latents), galaxy.latents
        arms = f["arms"] or {}
        rows.append([float(f[k]) for k in _LATENT_FEATURES]
                    + [arms.get("m", 0), arms.get("pitch_deg", 0.0), arms.get("amp", 0.0), lat["log_snr"], lat["re"],
                       lat["psf"]] + [f["artifact"] == kind for kind in ("star", "trail", "empty")])
        probs.append(galaxy.probabilities)
    if not np.allclose(np.array(probs), true_probabilities(catalog, schema)):
        raise RuntimeError(f"regenerated latents of {split} do not give the catalog's true probabilities: "
                           "the cache was made by another generator version")
    return np.array(rows, dtype=np.float64)


def pixel_features(catalog):
    """(galaxy, feature) statistics any astronomer measures on the jpg: flux, size, peak, half-light area and the
    axis ratio of the flux-weighted second moments (all light, and the brightest pixels above 20 % of the peak),
    inside a Gaussian window of 12 px around the centre; plus a colour ratio and the pixel spread."""
    import numpy as np

    from zoobot.shared.images import load_image

    def stats(image):
        image = np.asarray(image, dtype=np.float64)
        grey = image.mean(axis=-1)
        light = np.clip(grey - np.median(grey), 0.0, None)
        y, x = np.indices(light.shape, dtype=np.float64)
        centre = (np.array(light.shape) - 1) / 2
        window = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * 12.0 ** 2))
        out = []
        for threshold in (0.0, 0.2):
            w = np.where(light > threshold * light.max(), light, 0.0) * window
            total = w.sum() + 1e-9
            cy, cx = (w * y).sum() / total, (w * x).sum() / total
            qyy, qxx = (w * (y - cy) ** 2).sum() / total, (w * (x - cx) ** 2).sum() / total
            qxy = (w * (y - cy) * (x - cx)).sum() / total
            half_trace, spread = (qxx + qyy) / 2, np.sqrt(((qxx - qyy) / 2) ** 2 + qxy ** 2)
            axis_ratio = np.sqrt(max(half_trace - spread, 1e-9) / max(half_trace + spread, 1e-9))
            out += [total, axis_ratio, 2 * half_trace, light.max(), float((light > 0.5 * light.max()).sum())]
        return out + [image[..., 0].mean() / (image[..., 2].mean() + 1.0), grey.std()]

    return np.array([stats(load_image(loc)) for loc in catalog["file_loc"]], dtype=np.float64)


def _fit_per_question(x_train, targets, weights, x_tests, schema, leaf: int) -> list:
    """One multi-output ExtraTrees regression per question (targets: that question's answers; weights:
    (galaxy, question), 0 leaves a galaxy out), predictions renormalised to sum to 1 per question."""
    import numpy as np
    from sklearn.ensemble import ExtraTreesRegressor

    outs = [np.zeros((len(x), schema.n_answers)) for x in x_tests]
    for q, (start, end) in enumerate(schema.question_index_groups):
        keep = weights[:, q] > 0
        model = ExtraTreesRegressor(n_estimators=100, min_samples_leaf=leaf, n_jobs=2, random_state=0)
        model.fit(x_train[keep], targets[keep, start:end + 1], sample_weight=weights[keep, q])
        for out, x in zip(outs, x_tests):
            p = np.clip(model.predict(x), 1e-3, None)
            out[:, start:end + 1] = p / p.sum(axis=1, keepdims=True)
    return outs


def ceilings(catalogs) -> dict:
    """Reach-weighted truth MAE per question (test and shifted sets) of predictors that bound what a model
    trained on these 2,000 galaxies can reach: regressions from the latents (perfect perception) to the truth and
    to the training votes, from pixel statistics to the training votes, each galaxy's own votes, the train mean."""
    import numpy as np

    from zoobot.shared.metrics import train_mean_fractions, true_probabilities, truth_mae, vote_counts
    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema

    splits = ("train", "test", "shifted")
    truth = {s: true_probabilities(catalogs[s], schema) for s in splits}
    counts = {s: vote_counts(catalogs[s], schema) for s in splits}
    groups = schema.question_index_groups
    totals = {s: np.stack([counts[s][:, a:b + 1].sum(axis=1) for a, b in groups], axis=1) for s in splits}

    def own_fractions(s):
        per_answer = np.concatenate([np.repeat(totals[s][:, [q]], b - a + 1, axis=1) for q, (a, b) in enumerate(groups)],
                                    axis=1)
        return np.where(per_answer > 0, counts[s] / np.maximum(per_answer, 1), np.nan)

    latents = {s: latent_features(catalogs[s], s) for s in splits}
    pixels = {s: pixel_features(catalogs[s]) for s in splits}
    votes = np.nan_to_num(own_fractions("train"))
    everyone = np.ones_like(totals["train"], dtype=np.float64)
    predictions = {
        "latents -> true probabilities (perfect perception, noiseless labels)":
            _fit_per_question(latents["train"], truth["train"], everyone, [latents["test"], latents["shifted"]],
                              schema, leaf=5),
        "latents -> training votes (perfect perception, the same labels as the CNN)":
            _fit_per_question(latents["train"], votes, totals["train"].astype(float),
                              [latents["test"], latents["shifted"]], schema, leaf=5),
        "pixel statistics -> training votes (12 moments of the jpg)":
            _fit_per_question(pixels["train"], votes, totals["train"].astype(float),
                              [pixels["test"], pixels["shifted"]], schema, leaf=10),
        "each galaxy's own votes (label noise)": [own_fractions("test"), own_fractions("shifted")],
    }
    mean = train_mean_fractions(counts["train"], schema)
    predictions["train mean"] = [np.broadcast_to(mean, truth[s].shape) for s in ("test", "shifted")]
    return {name: {s: truth_mae(p, truth[s], schema).to_dict() for s, p in zip(("test", "shifted"), preds)}
            for name, preds in predictions.items()}


def ceiling_table(results: dict, split: str) -> str:
    questions = list(next(iter(results.values()))[split])
    return C.markdown_table(["predictor", *[q.replace("-dr5", "") for q in questions]],
                            [[name, *[r[split][q] for q in questions]] for name, r in results.items()])


# ------------------------------------------------------------------------------------------------
# orchestration and tables
# ------------------------------------------------------------------------------------------------

NAMES = {"torch": "PyTorch train()", "tf": "TensorFlow train()"}


METRICS = ("mae", "coverage90", "dm_nll")


def _pooled(scores: dict, split: str, metric: str):
    return scores[split]["pooled"][metric]


def summary_table(runs: dict, base: dict) -> str:
    """Pooled scores of every run, raw and calibrated, with the baseline and truth rows."""
    rows = []
    for name, r in runs.items():
        for kind in ("raw", "calibrated"):
            scores = {split: r["scores"][split][kind] for split in ("test", "shifted")}
            rows.append([f"{name}, {kind}", *[_pooled(scores, split, m) for m in METRICS for split in ("test", "shifted")],
                         r["train_wall_s"], r.get("train_cpu_s"), r["epochs_run"]])
    for predictor, label, nll in (
            ("train_mean", "train mean (vote fractions of the training set; multinomial NLL)", "multinomial_nll"),
            ("constant_dirichlet", "constant Dirichlet fitted to the training votes", "dm_nll"),
            ("truth", "truth (multinomial NLL of the true probabilities)", "multinomial_nll")):
        scores = {split: base[split][predictor] for split in ("test", "shifted")}
        rows.append([label, *[_pooled(scores, split, m) for m in ("mae", "coverage90") for split in ("test", "shifted")],
                     *[_pooled(scores, split, nll) for split in ("test", "shifted")], None, None, None])
    return C.markdown_table(["run", "MAE test", "MAE shifted", "90% cov. test", "90% cov. shifted",
                             "DM NLL/vote test", "DM NLL/vote shifted", "train wall s", "train CPU s", "epochs"],
                            rows)


def question_table(run: dict, base: dict, split: str) -> str:
    """Per question: the run's raw and calibrated scores next to the baselines."""
    scores, b = run["scores"][split], base[split]
    rows = []
    questions = list(b["train_mean"]["per_question"])
    for i, q in enumerate([*questions, "pooled"]):
        def get(scored, metric):
            return scored["pooled"][metric] if q == "pooled" else scored["per_question"][q][metric]

        scale = run["scores"]["fitted_scale"][i] if q != "pooled" else None
        rows.append([q, get(scores["raw"], "mae"), get(b["train_mean"], "mae"), get(b["constant_dirichlet"], "mae"),
                     get(scores["raw"], "coverage90"), get(scores["calibrated"], "coverage90"),
                     get(b["constant_dirichlet"], "coverage90"), get(scores["raw"], "dm_nll"),
                     get(scores["calibrated"], "dm_nll"), get(b["constant_dirichlet"], "dm_nll"),
                     get(b["train_mean"], "multinomial_nll"), get(b["truth"], "multinomial_nll"), scale])
    return C.markdown_table(["question", "MAE", "MAE train mean", "MAE const. Dirichlet", "cov90 raw",
                             "cov90 calibrated", "cov90 const. Dirichlet", "DM NLL raw", "DM NLL calibrated",
                             "DM NLL const. Dirichlet", "NLL train mean", "NLL truth", "scale"], rows)


def _concentrations_file(out: pathlib.Path, backend: str) -> pathlib.Path:
    return out.with_name(f"{out.stem}_{backend}_concentrations.npz")


def _save_concentrations(out: pathlib.Path, backend: str, concentrations: dict) -> None:
    """Raw concentrations next to the JSON results, so that ``--rescore`` can score them again."""
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(_concentrations_file(out, backend), **{k: np.asarray(v) for k, v in concentrations.items()})


def _run_name(backend: str, label: str, suffix: str = "") -> str:
    label = ", ".join(part for part in (label, suffix) if part)
    return f"{NAMES[backend]} [{label}]" if label else NAMES[backend]


def _load_runs(spec: str) -> dict:
    """The runs of an earlier ``--out`` file (``PATH`` or ``PATH=LABEL``), with their saved raw concentrations,
    named by their label."""
    import numpy as np

    path, _, label = spec.partition("=")
    previous = json.loads(pathlib.Path(path).read_text())
    label = label or previous["settings"].get("label") or pathlib.Path(path).stem
    runs = {}
    for key, result in previous["results"].items():
        backend = result.get("backend", key)
        saved = np.load(_concentrations_file(pathlib.Path(path), result.get("concentrations_key", backend)))
        result = {k: v for k, v in result.items() if k != "scores"}
        result.update(backend=backend, _concentrations={split: saved[split] for split in saved.files})
        runs[_run_name(backend, label, result.get("label_suffix", ""))] = result
    return runs


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="train() epochs (default 15; quick 1)")
    parser.add_argument("--train-kwargs", default="{}",
                        help="JSON dict of extra train() keywords, e.g. '{\"learning_rate\": 0.002}'")
    parser.add_argument("--label", default="", help="name of this run in the tables")
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="train with an exponential moving average of the weights (torch only)")
    parser.add_argument("--ceiling", action="store_true",
                        help="no training: the reach-weighted truth MAE of regressions from the generator's latents "
                             "and from pixel statistics (scikit-learn), what bounds any model of these sets")
    parser.add_argument("--tta", type=int, default=0, metavar="N",
                        help="also score the mean of N predictions through the training augmentations "
                             "(test-time augmentation), as an extra row")
    parser.add_argument("--rescore", nargs="+", default=None, metavar="JSON[=LABEL]",
                        help="score the raw concentrations saved by earlier runs (their --out files) again, "
                             "without training, in one set of tables (e.g. before=... after=...)")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    preset = SCIENCE_QUICK if args.quick else SCIENCE_FULL
    for key in ("image_size", "architecture", "batch_size", "source_size"):
        if getattr(args, key) is None:
            settings[key] = preset[key]
    settings["epochs"] = args.epochs or preset["epochs"]
    settings["label"] = args.label
    settings["ema"], settings["tta"] = args.ema, args.tta
    try:
        settings["train_kwargs"] = json.loads(args.train_kwargs)
    except json.JSONDecodeError as err:
        C.usage_error(f"--train-kwargs is not valid JSON ({err}): {args.train_kwargs!r}")
    if not isinstance(settings["train_kwargs"], dict):
        C.usage_error(f"--train-kwargs must be a JSON object, got {args.train_kwargs!r}")
    catalogs = science_catalogs(settings)
    if args.worker:
        with tempfile.TemporaryDirectory(prefix="bench_science_") as tmp:
            work = torch_worker if args.worker == "torch" else tf_worker
            C.write_worker_result(args.worker_out, work(settings, catalogs, pathlib.Path(tmp) / "run"))
        return {}

    from zoobot.shared.schemas import decals_dr5_ortho_schema as schema

    if args.ceiling:
        results = ceilings(catalogs)
        tables = {f"Ceilings: truth MAE per question, {split} set": ceiling_table(results, split)
                  for split in ("test", "shifted")}
        return C.finish(__file__, args, argv, settings, tables, results,
                        ["regressions: scikit-learn ExtraTreesRegressor (100 trees) per question on the 2,000 "
                         "training galaxies, weighted by the question's votes; MAE as in the other tables"])
    out = pathlib.Path(args.out) if args.out else C.default_out(__file__)
    runs = {}
    for path in args.rescore or []:
        runs.update(_load_runs(path))
    for backend in [] if args.rescore else settings["backends"]:
        result = C.run_worker(__file__, backend, argv, settings["threads"])
        result["backend"] = backend
        tta = result.pop("_tta_concentrations", None)
        _save_concentrations(out, backend, result["_concentrations"])
        runs[_run_name(backend, args.label)] = result
        if tta:
            _save_concentrations(out, f"{backend}_tta{settings['tta']}", tta)
            suffix = f"TTA x{settings['tta']}"
            runs[_run_name(backend, args.label, suffix)] = {**result, "_concentrations": tta, "label_suffix": suffix,
                                                            "concentrations_key": f"{backend}_tta{settings['tta']}"}
    for result in runs.values():
        result["scores"] = score(catalogs, result.pop("_concentrations"), schema)
    base = baselines(catalogs, schema)
    sets = (f"{settings['architecture']} from scratch, {settings['image_size']} px, colour, batch "
            f"{settings['batch_size']}, {settings['epochs']} epochs")
    tables = {f"Pooled over questions: {sets}": summary_table(runs, base)}
    for name, run in runs.items():
        for split in ("test", "shifted"):
            tables[f"{name} per question, {split} set"] = question_table(run, base, split)
    notes = ["scores from zoobot.shared.metrics.evaluate_predictions (docs/guides/evaluating.md)",
             "MAE: reach-weighted mean absolute error of the predicted vote fractions against the true answer "
             "probabilities (reach = true probability that the question is asked); pooled over every answer",
             "cov90: reach-weighted fraction of true probabilities inside the central 90 % interval of each "
             "answer's Beta(alpha_a, A_q - alpha_a); target 0.85-0.95",
             "DM NLL/vote: Dirichlet-multinomial negative log-likelihood of the test votes per vote; the constant "
             "Dirichlet is fitted to the training votes by maximum likelihood; NLL train mean and NLL truth are "
             "multinomial likelihoods of the training-mean fractions and of the true probabilities",
             "calibrated: concentrations times a per-question scale fitted to the validation votes "
             "(zoobot.shared.calibration.fit_concentration_scale)",
             f"train wall s: the whole train() call on {settings['threads']} threads (shared machine: noisy); train "
             "CPU s: CPU time of the training process over that call (loader workers excluded), less sensitive "
             "to other load",
             "scale: the per-question concentration scale fitted to the validation votes"]
    return C.finish(__file__, args, argv, settings, tables, runs, notes)


if __name__ == "__main__":
    main()
