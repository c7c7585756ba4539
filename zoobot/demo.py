"""The zoobot demo: the whole workflow, offline, on synthetic galaxies, in a few minutes on a CPU.

:func:`run_demo` (``zoobot demo`` on the command line) walks through what a Galaxy Zoo user does
with zoobot, with the same public functions they would call:

1. **data**: write two synthetic catalogs (:mod:`zoobot.shared.synthetic`): galaxies with
   GZ DECaLS DR5 volunteer votes, and a labelled ring / no-ring set (half rings);
2. **pretrain** a small decision-tree model (``tiny_cnn`` encoder + Dirichlet head) on the votes
   with ``train(...)`` (cached in ``save_dir``: a rerun with the same settings reuses it);
3. **check** its vote fractions on held-out galaxies against the generator's true probabilities;
4. **finetune** a ring classifier from the pretrained encoder
   (``FinetuneableZoobotClassifier`` + ``get_trainer``);
5. **predict** the held-out ring galaxies (``predict_on_catalog.predict`` -> parquet);
6. **report**: ``report.md`` with metrics and figures (example galaxies, vote fractions per question,
   calibration curve, training curves) in ``save_dir``.

Everything runs with either backend (``backend='pytorch'`` or ``'tensorflow'``); steps the chosen
backend cannot run yet are skipped and said so in the report. Real work would use real images, a
large pretrained encoder (e.g. ``hf-hub:mwalmsley/zoobot-encoder-convnext_nano``) and 224-pixel inputs;
the demo trades that for speed (64-pixel images, a 4-layer CNN), so its numbers show the workflow,
not zoobot's accuracy.

Examples
--------
>>> from zoobot.demo import run_demo
>>> result = run_demo('zoobot_demo')  # doctest: +SKIP
>>> print(result.report)  # doctest: +SKIP
zoobot_demo/report.md
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import shutil
import time
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["run_demo", "DemoResult", "DemoSettings", "QUICK_SETTINGS"]


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. The defaults take about 2-3 minutes on 2 CPU cores."""

    #: labelled ring / no-ring galaxies (split 70/10/20 into train / val / held-out test)
    n_galaxies: int = 600
    #: galaxies with GZ DECaLS DR5 votes for pretraining (split 70/10/20; the test 20 % is held out)
    n_pretrain: int = 2000
    #: image side in pixels (synthetic images are rendered at this size)
    image_size: int = 64
    pretrain_epochs: int = 6
    finetune_epochs: int = 8
    #: encoder blocks trained while finetuning (-1 = all; 0 = head only)
    finetune_blocks: int = -1
    finetune_learning_rate: float = 1e-3
    batch_size: int = 64
    #: MC-dropout samples per galaxy for the tree model's predictions
    n_samples: int = 5
    seed: int = 0


#: Tiny settings for tests and a first smoke run (``zoobot demo --quick``): about 20 s.
QUICK_SETTINGS = dict(n_pretrain=200, image_size=32, pretrain_epochs=1, finetune_epochs=1, n_samples=2)

_BACKEND_MODULES = {
    "pytorch": {"train": "zoobot.pytorch.training.train_with_pytorch_lightning",
                "define_model": "zoobot.pytorch.estimators.define_model",
                "finetune": "zoobot.pytorch.training.finetune",
                "datasets": "zoobot.pytorch.datasets",
                "predict": "zoobot.pytorch.predictions.predict_on_catalog"},
    "tensorflow": {"train": "zoobot.tensorflow.training.train_with_keras",
                   "define_model": "zoobot.tensorflow.estimators.define_model",
                   "finetune": "zoobot.tensorflow.training.finetune",
                   "datasets": "zoobot.tensorflow.datasets",
                   "predict": "zoobot.tensorflow.predictions.predict_on_catalog"},
}
_CHECKPOINT_SUFFIX = {"pytorch": ".ckpt", "tensorflow": ".keras"}


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` wrote. Paths are absolute."""

    save_dir: pathlib.Path
    report: pathlib.Path
    predictions: dict
    figures: dict
    metrics: dict
    seconds: float
    reused_pretrained: bool
    skipped: list


def run_demo(save_dir="zoobot_demo", n_galaxies: int | None = None, backend: str = "pytorch", *,
             quick: bool = False, num_workers: int = 0, echo: Callable[[str], None] = print,
             **settings) -> DemoResult:
    """Run the offline end-to-end demo and write a report.

    Parameters
    ----------
    save_dir : str or path-like
        Output folder (created). Rerunning with the same settings reuses the data and the pretrained
        model found there.
    n_galaxies : int, optional
        Labelled ring / no-ring galaxies for finetuning and its held-out test (default 600).
    backend : {'pytorch', 'tensorflow'}
    quick : bool
        Tiny sizes (:data:`QUICK_SETTINGS`) for a smoke test; the results then mean little.
    num_workers : int
        Data-loading worker processes (0 = load in the main process, fastest for small images).
    echo : callable
        Receives one line of progress text per step (default ``print``).
    **settings
        Any field of :class:`DemoSettings` (``n_pretrain``, ``image_size``, ``pretrain_epochs``, ...).

    Returns
    -------
    DemoResult
        ``report`` is the path of ``report.md``.

    Raises
    ------
    ValueError
        Unknown backend (E13), unknown or invalid settings.
    MissingDependencyError
        (E12) the backend's framework or matplotlib is not installed.
    """
    from zoobot.shared.errors import missing_dependency, unknown_option_error

    if backend not in _BACKEND_MODULES:
        raise unknown_option_error("backend", backend, list(_BACKEND_MODULES))
    values = dict(QUICK_SETTINGS) if quick else {}
    if n_galaxies is not None:
        values["n_galaxies"] = n_galaxies
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(DemoSettings)})
    if unknown:
        raise TypeError(f"run_demo got unknown settings {unknown}; accepted: "
                        f"{[f.name for f in dataclasses.fields(DemoSettings)]}")
    values.update(settings)
    config = DemoSettings(**values)
    _check_settings(config)
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise missing_dependency("matplotlib", "The demo report's figures", "plots") from None

    return _Demo(pathlib.Path(save_dir).resolve(), config, backend, num_workers, echo).run()


def _check_settings(config: DemoSettings) -> None:
    minimum = {"n_galaxies": 30, "n_pretrain": 50, "image_size": 16, "pretrain_epochs": 1, "finetune_epochs": 1,
               "batch_size": 2, "n_samples": 1}
    for name, low in minimum.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Demo setting {name} must be an integer >= {low}, got {value!r}")
    if config.finetune_blocks < -1:
        raise ValueError(f"finetune_blocks must be >= -1 (-1 = all blocks), got {config.finetune_blocks}")


class _Demo:
    """One run of the demo; each step is a method, called in order by :meth:`run`."""

    def __init__(self, save_dir: pathlib.Path, config: DemoSettings, backend: str, num_workers: int, echo):
        self.save_dir = save_dir
        self.config = config
        self.backend = backend
        self.num_workers = num_workers
        self.echo = echo
        self.modules = _BACKEND_MODULES[backend]
        self.figures: dict = {}
        self.predictions: dict = {}
        self.metrics: dict = {"backend": backend, "settings": dataclasses.asdict(config)}
        self.skipped: list = []
        self.timings: dict = {}
        self.reused_pretrained = False
        self.n_steps = 6
        self.step = 0

    # ------------------------------------------------------------------------- helpers
    def _say(self, text: str) -> None:
        self.step += 1
        self.echo(f"\n[{self.step}/{self.n_steps}] {text}")

    def _module(self, key: str):
        try:
            return importlib.import_module(self.modules[key])
        except ModuleNotFoundError as error:
            framework = (error.name or "").split(".")[0]
            if framework in ("torch", "torchvision", "timm", "lightning", "tensorflow", "keras"):
                from zoobot.shared.errors import missing_dependency

                raise missing_dependency(framework, f"The demo with the {self.backend} backend",
                                         self.backend) from error
            raise

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.time() - started, 1)

    # ------------------------------------------------------------------------- the pipeline
    def run(self) -> DemoResult:
        started = time.time()
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.echo(f"zoobot demo ({self.backend} backend): everything is written to {self.save_dir}")
        self.votes_catalog, self.rings_catalog = self.make_data()
        tree_model, tree_dir = self.pretrain()
        self.evaluate_tree(tree_model, tree_dir)
        del tree_model
        ring_model = self.finetune(tree_dir)
        if ring_model is not None:
            self.predict_rings(ring_model)
        report = self.write_report(started)
        seconds = time.time() - started
        self.echo(f"\nDone in {seconds:.0f} s. Report: {report}")
        return DemoResult(self.save_dir, report, self.predictions, self.figures, self.metrics, seconds,
                          self.reused_pretrained, self.skipped)

    def make_data(self):
        """Step 1: synthetic catalogs (reused when already written with the same settings)."""
        started = time.time()
        c = self.config
        self._say(f"Synthetic data: {c.n_pretrain} galaxies with GZ DECaLS DR5 votes, {c.n_galaxies} labelled "
                  f"ring / no-ring galaxies ({c.image_size} x {c.image_size} px)")
        votes = self._synthetic_catalog("votes", n_galaxies=c.n_pretrain, label="votes", seed=c.seed)
        rings = self._synthetic_catalog("rings", n_galaxies=c.n_galaxies, label="ring", seed=c.seed + 1,
                                        ring_fraction=0.5)
        self.echo(f"  catalogs: {self.save_dir / 'data' / 'votes' / 'catalog.parquet'} and "
                  f"{self.save_dir / 'data' / 'rings' / 'catalog.parquet'}")
        self._timed("data", started)
        return votes, rings

    def _synthetic_catalog(self, name: str, **kwargs) -> pd.DataFrame:
        from zoobot.shared.synthetic import make_synthetic_catalog

        root = self.save_dir / "data" / name
        key = {**kwargs, "image_size": self.config.image_size}
        marker = root / "demo_settings.json"
        catalog_path = root / "catalog.parquet"
        if marker.is_file() and catalog_path.is_file() and json.loads(marker.read_text()) == key:
            catalog = pd.read_parquet(catalog_path)
            if all(pathlib.Path(p).is_file() for p in catalog["file_loc"].iloc[:20]):
                self.echo(f"  reusing {catalog_path}")
                return catalog
        if root.exists():
            shutil.rmtree(root)
        catalog, _ = make_synthetic_catalog(root, image_size=self.config.image_size, **kwargs)
        marker.write_text(json.dumps(key))
        return catalog

    # ------------------------------------------------------------------------- step 2
    def pretrain(self):
        """Step 2: train (or reuse) a tiny decision-tree model on the vote counts."""
        from zoobot.shared import schemas

        started = time.time()
        c = self.config
        tree_dir = self.save_dir / f"pretrained_tree_{self.backend}"
        cache = tree_dir / "demo_cache.json"
        key = {"backend": self.backend, "n_pretrain": c.n_pretrain, "image_size": c.image_size,
               "epochs": c.pretrain_epochs, "batch_size": c.batch_size, "seed": c.seed}
        if cache.is_file():
            record = json.loads(cache.read_text())
            checkpoint = tree_dir / record.get("checkpoint", "")
            if record.get("settings") == key and checkpoint.is_file():
                self._say(f"Pretrained tree model: reusing {checkpoint} (delete {tree_dir.name}/ to retrain)")
                model = self._load_tree(checkpoint)
                self.tree_checkpoint = checkpoint
                self.reused_pretrained = True
                self._timed("pretrain", started)
                return model, tree_dir
        self._say(f"Pretraining a tiny_cnn decision-tree model on {c.n_pretrain} galaxies' votes "
                  f"({_plural(c.pretrain_epochs, 'epoch')})")
        if tree_dir.exists():
            shutil.rmtree(tree_dir)
        train = self._module("train").train
        model, trainer = train(
            save_dir=str(tree_dir), schema=schemas.decals_dr5_ortho_schema, catalog=self.votes_catalog,
            model_architecture="tiny_cnn", batch_size=c.batch_size, epochs=c.pretrain_epochs,
            patience=c.pretrain_epochs, color=False, resize_size=c.image_size, gpus=0,
            num_workers=self.num_workers, random_state=c.seed, save_top_k=1, resume=False,
        )
        best = pathlib.Path(trainer.checkpoint_callback.best_model_path)
        stable = tree_dir / f"tree_model{_CHECKPOINT_SUFFIX[self.backend]}"
        shutil.copyfile(best, stable)
        cache.write_text(json.dumps({"settings": key, "checkpoint": stable.name}, indent=2))
        self.tree_checkpoint = stable
        self.echo(f"  best checkpoint: {stable}")
        self._timed("pretrain", started)
        return model, tree_dir

    def _load_tree(self, checkpoint: pathlib.Path):
        if self.backend == "pytorch":
            return self._module("define_model").ZoobotTree.load_from_checkpoint(str(checkpoint))
        self._module("define_model")  # registers the Keras classes
        import keras

        return keras.saving.load_model(str(checkpoint))

    # ------------------------------------------------------------------------- step 3
    def evaluate_tree(self, model, tree_dir: pathlib.Path) -> None:
        """Step 3: vote fractions of held-out galaxies vs the generator's true probabilities."""
        from zoobot.shared import plots, schemas, stats

        started = time.time()
        schema = schemas.decals_dr5_ortho_schema
        test = pd.read_parquet(tree_dir / "test_catalog.parquet")
        train = pd.read_parquet(tree_dir / "train_catalog.parquet")
        self._say(f"Predicting vote fractions for the {len(test)} held-out galaxies ({self.config.n_samples} "
                  "MC-dropout samples each)")
        save_loc = self.save_dir / "predictions" / "tree_predictions.parquet"
        save_loc.parent.mkdir(parents=True, exist_ok=True)
        predict = self._module("predict").predict
        concentrations = predict(
            test, model, n_samples=self.config.n_samples, label_cols=schema.label_cols, save_loc=str(save_loc),
            datamodule_kwargs=dict(resize_after_crop=self.config.image_size, batch_size=128,
                                   num_workers=self.num_workers),
        )
        self.predictions["tree"] = save_loc
        predicted = stats.vote_fractions(concentrations, schema)
        true = test[[f"{c}_true-prob" for c in schema.label_cols]].to_numpy(dtype=np.float64)
        asked = stats.proportion_asked(true, schema)
        baseline = train[[f"{c}_true-prob" for c in schema.label_cols]].to_numpy(dtype=np.float64).mean(axis=0)
        self.metrics["tree"] = _tree_metrics(schema, true, predicted, asked, baseline)
        self.figures["vote_fractions"] = plots.plot_vote_fractions(
            true, predicted, schema, self.save_dir / "figures" / "vote_fractions.png", asked=asked,
            title=f"Pretrained tree model on {len(test)} held-out galaxies (questions asked with p >= 0.5)",
            true_label="true vote fraction",
        )
        self.echo(f"  mean absolute error of the vote fractions: {self.metrics['tree']['mae']:.3f} "
                  f"(predicting the average galaxy: {self.metrics['tree']['baseline_mae']:.3f})")
        self._timed("evaluate_tree", started)

    # ------------------------------------------------------------------------- step 4
    def finetune(self, tree_dir: pathlib.Path):
        """Step 4: finetune a ring classifier from the pretrained encoder."""
        from zoobot.shared.catalogs import split_catalog

        started = time.time()
        c = self.config
        self.ring_train, self.ring_val, self.ring_test = split_catalog(self.rings_catalog, seed=c.seed)
        try:
            finetune = self._module("finetune")
            datasets = self._module("datasets")
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("zoobot."):
                raise
            self._skip("finetune", f"the {self.backend} backend has no finetuning yet ({error})")
            return None
        blocks = "all encoder blocks" if c.finetune_blocks == -1 else f"{c.finetune_blocks} encoder block(s)"
        self._say(f"Finetuning a ring classifier from the pretrained encoder on {len(self.ring_train)} galaxies "
                  f"({len(self.ring_val)} for validation; {blocks} + a new head; {_plural(c.finetune_epochs, 'epoch')})")
        finetune_dir = self.save_dir / f"finetuned_rings_{self.backend}"
        if finetune_dir.exists():
            shutil.rmtree(finetune_dir)  # finetuning is quick: always redo it (no stale checkpoints)
        model = finetune.FinetuneableZoobotClassifier(
            zoobot_checkpoint_loc=str(self.tree_checkpoint), num_classes=2, n_blocks=c.finetune_blocks,
            learning_rate=c.finetune_learning_rate, seed=c.seed,
        )
        datamodule = datasets.GalaxyDataModule(
            label_cols=["ring"], train_catalog=self.ring_train, val_catalog=self.ring_val,
            test_catalog=self.ring_test, batch_size=32, resize_after_crop=c.image_size,
            greyscale=int(getattr(model, "channels", 1)) == 1, num_workers=self.num_workers, seed=c.seed,
        )
        trainer = finetune.get_trainer(str(finetune_dir), accelerator="cpu", devices=1,
                                       max_epochs=c.finetune_epochs, patience=c.finetune_epochs)
        trainer.fit(model, datamodule)
        best = trainer.checkpoint_callback.best_model_path
        self.finetune_dir = finetune_dir
        from zoobot.shared.training_config import write_run_config

        # lets `zoobot predict --checkpoint ...` find the image size the classifier was trained at
        write_run_config(finetune_dir, {"task": "classification", "label_cols": ["ring"], "num_classes": 2,
                                        "resize_after_crop": c.image_size, "n_blocks": c.finetune_blocks,
                                        "checkpoint": str(self.tree_checkpoint)}, self.backend)
        self.echo(f"  best checkpoint: {best}")
        self._timed("finetune", started)
        return finetune.FinetuneableZoobotClassifier.load_from_checkpoint(best)

    def _skip(self, step: str, reason: str) -> None:
        self.skipped.append(f"{step}: {reason}")
        self.step += 1
        self.echo(f"\n[{self.step}/{self.n_steps}] Skipping {step}: {reason}")

    # ------------------------------------------------------------------------- step 5
    def predict_rings(self, model) -> None:
        """Step 5: predict the held-out ring galaxies; accuracy, ROC AUC, calibration, example grid."""
        from zoobot.shared import plots

        started = time.time()
        test = self.ring_test
        self._say(f"Predicting the {len(test)} held-out ring / no-ring galaxies")
        save_loc = self.save_dir / "predictions" / "ring_predictions.parquet"
        predict = self._module("predict").predict
        probabilities = predict(
            test, model, n_samples=1, label_cols=["not_ring", "ring"], save_loc=str(save_loc),
            datamodule_kwargs=dict(resize_after_crop=self.config.image_size, batch_size=128,
                                   num_workers=self.num_workers),
        )
        self.predictions["rings"] = save_loc
        p_ring = probabilities[:, 1, :].mean(axis=1)
        y = test["ring"].to_numpy(dtype=int)
        self.metrics["rings"] = _ring_metrics(y, p_ring)
        m = self.metrics["rings"]
        self.echo(f"  accuracy {m['accuracy']:.2f} (always guessing the majority class: {m['majority_accuracy']:.2f}), "
                  f"ROC AUC {m['roc_auc']:.2f}")
        n_bins = 10 if len(test) >= 200 else 5
        self.figures["calibration"] = plots.plot_calibration(
            y, p_ring, self.save_dir / "figures" / "calibration.png", n_bins=n_bins, class_name="ring",
            title=f"Ring classifier on {len(test)} held-out galaxies",
        )
        chosen = _grid_selection(y, p_ring, n=16, seed=self.config.seed)
        self.figures["galaxies"] = plots.plot_galaxy_grid(
            test["file_loc"].to_numpy()[chosen], self.save_dir / "figures" / "example_galaxies.png",
            true_labels=y[chosen], predicted_probs=p_ring[chosen], class_name="ring",
            title="Held-out galaxies: true label and predicted p(ring) (green right, red wrong)",
        )
        self._timed("predict_rings", started)

    # ------------------------------------------------------------------------- step 6
    def write_report(self, started: float) -> pathlib.Path:
        """Step 6: training curves, metrics.json and report.md."""
        from zoobot.shared import plots

        self._say("Writing the report")
        runs = {"Pretraining (decision tree, from scratch)": self.save_dir / f"pretrained_tree_{self.backend}"
                / "logs" / "metrics.csv"}
        if getattr(self, "finetune_dir", None) is not None:
            runs["Finetuning (ring classifier)"] = self.finetune_dir / "logs" / "metrics.csv"
        runs = {k: v for k, v in runs.items() if v.is_file()}
        if runs:
            self.figures["training_curves"] = plots.plot_training_curves(
                runs, self.save_dir / "figures" / "training_curves.png")
        self.timings["total"] = round(time.time() - started, 1)
        self.metrics["timings_s"] = self.timings
        self.metrics["skipped"] = self.skipped
        (self.save_dir / "metrics.json").write_text(json.dumps(self.metrics, indent=2, default=str))
        report = self.save_dir / "report.md"
        report.write_text(_report_text(self))
        return report


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

def _tree_metrics(schema, true, predicted, asked, baseline) -> dict:
    """Per-question mean absolute error of the vote fractions, where the question is asked (p >= 0.5)."""
    per_question = {}
    all_model, all_base = [], []
    for q, question in enumerate(schema.questions):
        keep = asked[:, q] >= 0.5
        cols = list(range(question.start_index, question.end_index + 1))
        model_err = np.abs(predicted[keep][:, cols] - true[keep][:, cols])
        base_err = np.abs(baseline[cols][None, :] - true[keep][:, cols])
        per_question[question.text] = {
            "galaxies": int(keep.sum()),
            "mae": float(np.nanmean(model_err)) if keep.any() else None,
            "baseline_mae": float(np.nanmean(base_err)) if keep.any() else None,
        }
        all_model.append(model_err.ravel())
        all_base.append(base_err.ravel())
    return {
        "galaxies": int(true.shape[0]),
        "mae": float(np.nanmean(np.concatenate(all_model))),
        "baseline_mae": float(np.nanmean(np.concatenate(all_base))),
        "per_question": per_question,
    }


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties 1/2."""
    positives, negatives = p[y == 1], p[y == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def _ring_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    predicted = (p >= 0.5).astype(int)
    rate = float(y.mean())
    return {
        "galaxies": int(len(y)),
        "rings": int(y.sum()),
        "accuracy": float((predicted == y).mean()),
        "majority_accuracy": max(rate, 1 - rate),
        "roc_auc": _roc_auc(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "brier_constant": float(np.mean((rate - y) ** 2)),
        "true_positives": int(((predicted == 1) & (y == 1)).sum()),
        "false_positives": int(((predicted == 1) & (y == 0)).sum()),
        "false_negatives": int(((predicted == 0) & (y == 1)).sum()),
        "true_negatives": int(((predicted == 0) & (y == 0)).sum()),
    }


def _grid_selection(y: np.ndarray, p: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` galaxies, half rings and half not (random, seeded), ordered by predicted p(ring)."""
    rng = np.random.default_rng(seed)
    rings, others = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_rings = min(len(rings), n // 2)
    n_others = min(len(others), n - n_rings)
    n_rings = min(len(rings), n - n_others)
    chosen = np.concatenate([rng.choice(rings, n_rings, replace=False), rng.choice(others, n_others, replace=False)])
    return chosen[np.argsort(-p[chosen], kind="stable")]


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _rel(demo: _Demo, path) -> str:
    return pathlib.Path(path).relative_to(demo.save_dir).as_posix()


def _report_text(demo: _Demo) -> str:
    c = demo.config
    m = demo.metrics
    lines = [
        "# zoobot demo report",
        "",
        f"Backend: **{demo.backend}**. Everything below ran offline on synthetic galaxies (images rendered with known "
        f"morphology and simulated Galaxy Zoo volunteer votes; see `zoobot.shared.synthetic`), at "
        f"{c.image_size} x {c.image_size} pixels with a 4-layer CNN (`tiny_cnn`) so that it finishes in minutes on a "
        "CPU. Real work uses real images, a large pretrained encoder and 224-pixel inputs: these numbers show the "
        "workflow, not zoobot's accuracy.",
        "",
        "## What ran",
        "",
        f"1. Wrote {c.n_pretrain} galaxies with GZ DECaLS DR5 votes (`data/votes/`) and {c.n_galaxies} labelled "
        "ring / no-ring galaxies, half of them rings (`data/rings/`).",
        f"2. {'Reused' if demo.reused_pretrained else 'Trained'} a decision-tree model from scratch on the votes: "
        f"`train(schema=decals_dr5_ortho_schema, model_architecture='tiny_cnn', epochs={c.pretrain_epochs})`, "
        f"checkpoint `{_rel(demo, demo.tree_checkpoint)}`.",
        "3. Predicted the vote fractions of the held-out 20 % of those galaxies and compared them with the "
        "generator's true answer probabilities.",
    ]
    if "rings" in m:
        lines += [
            "4. Finetuned `FinetuneableZoobotClassifier(zoobot_checkpoint_loc=..., num_classes=2, "
            f"n_blocks={c.finetune_blocks})` on {len(demo.ring_train)} ring / no-ring galaxies "
            f"({len(demo.ring_val)} for validation, {_plural(c.finetune_epochs, 'epoch')}).",
            f"5. Predicted the {len(demo.ring_test)} held-out ring / no-ring galaxies.",
        ]
    for note in demo.skipped:
        lines.append(f"- Skipped {note}.")
    tree = m["tree"]
    lines += [
        "",
        "## Decision-tree model: vote fractions of held-out galaxies",
        "",
        f"Mean absolute error of the predicted vote fractions over all answers of questions asked (p >= 0.5): "
        f"**{tree['mae']:.3f}**, against {tree['baseline_mae']:.3f} for predicting the average training galaxy "
        f"every time ({tree['galaxies']} galaxies).",
        "",
        "| question | galaxies asked | MAE model | MAE average galaxy |",
        "|---|---:|---:|---:|",
    ]
    for question, row in tree["per_question"].items():
        model_mae = "-" if row["mae"] is None else f"{row['mae']:.3f}"
        base_mae = "-" if row["baseline_mae"] is None else f"{row['baseline_mae']:.3f}"
        lines.append(f"| {question} | {row['galaxies']} | {model_mae} | {base_mae} |")
    lines += ["", f"![Predicted vs true vote fractions]({_rel(demo, demo.figures['vote_fractions'])})", ""]
    if "rings" in m:
        r = m["rings"]
        lines += [
            "## Ring classifier: held-out galaxies",
            "",
            "| metric | model | constant guess |",
            "|---|---:|---:|",
            f"| accuracy (p >= 0.5) | {r['accuracy']:.3f} | {r['majority_accuracy']:.3f} |",
            f"| ROC AUC | {r['roc_auc']:.3f} | 0.500 |",
            f"| Brier score (lower is better) | {r['brier']:.3f} | {r['brier_constant']:.3f} |",
            "",
            f"{r['rings']} of the {r['galaxies']} test galaxies are rings; the model finds {r['true_positives']} of "
            f"them, with {r['false_positives']} false alarms.",
            "",
            f"![Example galaxies]({_rel(demo, demo.figures['galaxies'])})",
            "",
            f"![Calibration curve]({_rel(demo, demo.figures['calibration'])})",
            "",
        ]
    if "training_curves" in demo.figures:
        lines += ["## Training curves", "", f"![Training curves]({_rel(demo, demo.figures['training_curves'])})", ""]
    lines += ["## Files", ""]
    for name, path in demo.predictions.items():
        lines.append(f"- `{_rel(demo, path)}`: {name} predictions, one row per `id_str` "
                     "(read with `zoobot.shared.load_predictions.load`)")
    lines += [
        "- `metrics.json`: the numbers above, the settings and the time per step",
        f"- `pretrained_tree_{demo.backend}/`: checkpoints, `logs/metrics.csv`, `config.json`, split catalogs",
        "",
        "## Timings",
        "",
        ", ".join(f"{k}: {v:.0f} s" for k, v in demo.timings.items()),
        "",
        "## Next steps",
        "",
        "- Your own catalog: `zoobot finetune --catalog my_catalog.csv --label-cols my_label "
        "--name hf-hub:mwalmsley/zoobot-encoder-convnext_nano --save-dir my_run` (see `docs/finetuning.md`).",
        "- Predict with the demo's ring classifier: `zoobot predict --catalog CATALOG --checkpoint "
        f"finetuned_rings_{demo.backend}/checkpoints/last{_CHECKPOINT_SUFFIX[demo.backend]} --save-loc preds.parquet`.",
        "",
    ]
    return "\n".join(lines)
