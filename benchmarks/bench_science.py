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


def _predict_raw(predict, catalog, model) -> list:
    """One deterministic pass; raw (uncalibrated) concentrations where ``predict`` can calibrate."""
    options = {"test_time_dropout": False}
    if "calibrate" in inspect.signature(predict).parameters:
        options["calibrate"] = False
    return predict(catalog[["id_str", "file_loc"]], model, n_samples=1, **options)[..., 0].tolist()


def _run_backend(train, predict, settings, catalogs, save_dir) -> dict:
    from zoobot.shared.schemas import decals_dr5_ortho_schema

    kwargs = _train_kwargs(settings)
    start, cpu_start = time.perf_counter(), time.process_time()
    model, _ = train(save_dir, decals_dr5_ortho_schema, train_catalog=catalogs["train"],
                     val_catalog=catalogs["val"], **kwargs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    epochs_run = _epochs_run(pathlib.Path(save_dir))
    concentrations = {split: _predict_raw(predict, catalogs[split], model) for split in EVAL_SPLITS}
    scale = getattr(model, "concentration_scale", None)
    return {"train_wall_s": wall, "train_cpu_s": cpu, "epochs_run": epochs_run, "train_kwargs": kwargs,
            "stored_scale": None if scale is None else [float(s) for s in scale],
            "_concentrations": concentrations}


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

    return _run_backend(train, predict, settings, catalogs, save_dir)


def tf_worker(settings, catalogs, save_dir) -> dict:
    C.setup_tf(settings["threads"])
    from zoobot.tensorflow.predictions.predict_on_catalog import predict
    from zoobot.tensorflow.training.train_with_keras import train

    return _run_backend(train, predict, settings, catalogs, save_dir)


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


def _run_name(backend: str, label: str) -> str:
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
        saved = np.load(_concentrations_file(pathlib.Path(path), backend))
        result = {k: v for k, v in result.items() if k != "scores"}
        result.update(backend=backend, _concentrations={split: saved[split] for split in saved.files})
        runs[_run_name(backend, label)] = result
    return runs


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="train() epochs (default 15; quick 1)")
    parser.add_argument("--train-kwargs", default="{}",
                        help="JSON dict of extra train() keywords, e.g. '{\"learning_rate\": 0.002}'")
    parser.add_argument("--label", default="", help="name of this run in the tables")
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

    out = pathlib.Path(args.out) if args.out else C.default_out(__file__)
    runs = {}
    for path in args.rescore or []:
        runs.update(_load_runs(path))
    for backend in [] if args.rescore else settings["backends"]:
        result = C.run_worker(__file__, backend, argv, settings["threads"])
        result["backend"] = backend
        _save_concentrations(out, backend, result["_concentrations"])
        runs[_run_name(backend, args.label)] = result
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
