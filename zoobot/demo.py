"""The zoobot demo: the whole workflow, offline, on synthetic galaxies, in a few minutes on a CPU.

:func:`run_demo` (``zoobot demo`` on the command line) does what a Galaxy Zoo user does, with the
same public functions: writes synthetic catalogs (:mod:`zoobot.shared.synthetic`), pretrains a small
decision-tree model on their votes (settings in :class:`DemoSettings`; cached in ``save_dir``),
checks its vote fractions and intervals against the true probabilities, finetunes a ring classifier
from it (and from a random encoder), predicts held-out galaxies next to a brightness-and-size
baseline, and writes ``report.md`` with metrics, figures and command lines for its own files.

It runs with either backend (``backend='pytorch'`` or ``'tensorflow'``); steps a backend cannot run
are skipped and said so in the report. Its small images and 4-layer CNN show the workflow, not
zoobot's accuracy. The steps and files are described in docs/how_the_code_fits_together.md
("The offline demo"); see also docs/getting_started.md.

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

from zoobot.shared.validation import is_int, is_number

__all__ = ["run_demo", "DemoResult", "DemoSettings", "QUICK_SETTINGS"]


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes and training settings of the demo. The defaults take about 3 minutes on 2 CPU cores.

    Every training argument the demo relies on is set here explicitly, so the demo does not change
    when ``train()``'s defaults do.
    """

    #: labelled ring / no-ring galaxies (split 70/10/20 into train / val / held-out test)
    n_galaxies: int = 600
    #: galaxies with GZ DECaLS DR5 votes for pretraining (split 70/10/20; the test 20 % is held out)
    n_pretrain: int = 4000
    #: image side in pixels (synthetic images are rendered at this size)
    image_size: int = 64
    #: colour (3-channel) images for both models; False trains on greyscale
    color: bool = True
    #: measured (docs/getting_started.md): 2000 galaxies x 15 epochs reach 0.73-0.78 x the average galaxy's
    #: vote-fraction error depending on the split; 4000 x 12 reach 0.61-0.66 (seeds 0-2). Their encoder lifts the
    #: ring classifier's ROC AUC when labels are few (``few_labels``), not with all 426
    pretrain_epochs: int = 12
    pretrain_batch_size: int = 32
    #: peak learning rate of the tree model (AdamW), reached after one warm-up epoch, then cosine decay
    pretrain_learning_rate: float = 3e-3
    pretrain_weight_decay: float = 0.01
    finetune_epochs: int = 10
    #: encoder blocks trained while finetuning (-1 = all; 0 = head only)
    finetune_blocks: int = -1
    finetune_learning_rate: float = 1e-3
    finetune_batch_size: int = 32
    #: also finetune the same classifier from a randomly initialised encoder, to show what pretraining brings
    compare_random_encoder: bool = True
    #: also finetune both classifiers on only this many of the training galaxies (0: not), where pretraining
    #: matters most: with all 426 a random encoder learns these rings about as well (session 7, seeds 0-2)
    few_labels: int = 100
    #: MC-dropout samples per galaxy for the tree model's predictions
    n_samples: int = 5
    seed: int = 0

    def pretrain_schedule(self) -> dict:
        """``scheduler_params`` of the tree model: one epoch of linear warm-up, then cosine decay to 1 %."""
        return {"name": "cosine", "warmup_epochs": min(1, self.pretrain_epochs - 1),
                "max_epochs": self.pretrain_epochs, "min_lr_factor": 0.01}


#: Tiny settings for tests and a first smoke run (``zoobot demo --quick``): about 20 s.
QUICK_SETTINGS = dict(n_pretrain=200, image_size=32, pretrain_epochs=1, finetune_epochs=1, n_samples=2, few_labels=20)

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
#: Pixel statistics of the ring shortcut baseline (:func:`zoobot.shared.metrics.ring_baseline_auc`).
_PIXEL_BASELINE_FEATURES = ("total_flux", "second_moment")


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
               "pretrain_batch_size": 2, "finetune_batch_size": 2, "n_samples": 1}
    for name, low in minimum.items():
        value = getattr(config, name)
        if not is_int(value) or value < low:
            raise ValueError(f"Demo setting {name} must be an integer >= {low}, got {value!r}")
    for name in ("pretrain_learning_rate", "finetune_learning_rate", "pretrain_weight_decay"):
        value = getattr(config, name)
        if not is_number(value) or not 0 <= value < 1:
            raise ValueError(f"Demo setting {name} must be a number in [0, 1), got {value!r}")
    for name in ("color", "compare_random_encoder"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"Demo setting {name} must be True or False, got {getattr(config, name)!r}")
    if not is_int(config.few_labels) or config.few_labels < 0:
        raise ValueError(f"Demo setting few_labels must be an integer >= 0 (0: no few-label comparison), "
                         f"got {config.few_labels!r}")
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
        ring_models = self.finetune(tree_dir)
        if ring_models is not None:
            self.predict_rings(ring_models)
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
        from zoobot.shared.synthetic import GENERATOR_VERSION, make_synthetic_catalog

        root = self.save_dir / "data" / name
        # one pool per catalog, split 70/10/20 later: ids say "demo" (synth-demo-...), not "train"
        kwargs.setdefault("split", "demo")
        # a new generator version draws other galaxies: never reuse the old ones
        key = {**kwargs, "image_size": self.config.image_size, "generator_version": GENERATOR_VERSION}
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
        from zoobot.shared.synthetic import GENERATOR_VERSION

        started = time.time()
        c = self.config
        tree_dir = self.save_dir / f"pretrained_tree_{self.backend}"
        cache = tree_dir / "demo_cache.json"
        key = {"backend": self.backend, "n_pretrain": c.n_pretrain, "image_size": c.image_size, "color": c.color,
               "epochs": c.pretrain_epochs, "batch_size": c.pretrain_batch_size,
               "learning_rate": c.pretrain_learning_rate, "weight_decay": c.pretrain_weight_decay,
               "scheduler_params": c.pretrain_schedule(), "seed": c.seed,
               "generator_version": GENERATOR_VERSION}
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
            model_architecture="tiny_cnn", batch_size=c.pretrain_batch_size, epochs=c.pretrain_epochs,
            patience=c.pretrain_epochs, color=c.color, resize_size=c.image_size, gpus=0,
            num_workers=self.num_workers, random_state=c.seed, save_top_k=1, resume=False,
            learning_rate=c.pretrain_learning_rate, weight_decay=c.pretrain_weight_decay, dropout_rate=0.2,
            scheduler_params=c.pretrain_schedule(), crop_scale_bounds=(0.7, 0.8), crop_ratio_bounds=(0.9, 1.1),
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
        """Step 3: vote fractions and their 90 % intervals on held-out galaxies vs the true probabilities."""
        from zoobot.shared import plots, schemas, stats
        from zoobot.shared import metrics

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
        table = metrics.evaluate_predictions(test, concentrations, schema, train_catalog=train, interval_width=0.9)
        self.metrics["tree"] = _tree_metrics(table, n_galaxies=len(test))
        true = metrics.true_probabilities(test, schema)
        predicted = stats.vote_fractions(concentrations, schema)
        self.figures["vote_fractions"] = plots.plot_vote_fractions(
            true, predicted, schema, self.save_dir / "figures" / "vote_fractions.png",
            asked=stats.proportion_asked(true, schema),
            title=f"Pretrained tree model on {len(test)} held-out galaxies (questions asked with p >= 0.5)",
            true_label="true vote fraction",
        )
        counts = metrics.vote_counts(test, schema)
        self.figures["reliability"] = plots.plot_reliability(
            metrics.reliability_table(predicted, counts, schema),
            metrics.coverage_curve(concentrations, counts, schema, true_probs=true),
            self.save_dir / "figures" / "reliability.png",
            title=f"Tree model on {len(test)} held-out galaxies: are its fractions and intervals honest?",
        )
        tree = self.metrics["tree"]
        self.echo(f"  mean absolute error of the vote fractions: {tree['mae']:.3f} (predicting the average galaxy: "
                  f"{tree['baseline_mae']:.3f}; ratio {tree['mae_ratio']:.2f}); 90 % intervals hold the true "
                  f"probability {tree['coverage']:.0%} of the time")
        self._timed("evaluate_tree", started)

    # ------------------------------------------------------------------------- step 4
    def finetune(self, tree_dir: pathlib.Path):
        """Step 4: finetune a ring classifier from the pretrained encoder, and the same from a random one.

        Returns ``{'pretrained': model, 'random': model}`` (``'random'`` absent when
        ``compare_random_encoder`` is off), or None when the backend cannot finetune.
        """
        from zoobot.shared.catalogs import split_catalog

        started = time.time()
        c = self.config
        self.ring_train, self.ring_val, self.ring_test = split_catalog(self.rings_catalog, seed=c.seed)
        self._write_ring_splits()
        try:
            self._module("finetune")
            self._module("datasets")
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("zoobot."):
                raise
            self._skip("finetune", f"the {self.backend} backend has no finetuning yet ({error})")
            return None
        blocks = "all encoder blocks" if c.finetune_blocks == -1 else f"{c.finetune_blocks} encoder block(s)"
        also = "; then the same from a randomly initialised encoder, for comparison" if c.compare_random_encoder else ""
        self._say(f"Finetuning a ring classifier from the pretrained encoder on {len(self.ring_train)} galaxies "
                  f"({len(self.ring_val)} for validation; {blocks} + a new head; "
                  f"{_plural(c.finetune_epochs, 'epoch')}){also}")
        models = {}
        self.finetune_dir = self.save_dir / f"finetuned_rings_{self.backend}"
        models["pretrained"], self.ring_checkpoint = self._finetune_classifier(
            self.finetune_dir, dict(zoobot_checkpoint_loc=str(self.tree_checkpoint)), "ring_classifier")
        self.echo(f"  best checkpoint: {self.ring_checkpoint}")
        if c.compare_random_encoder:
            self.random_dir = self.save_dir / f"finetuned_rings_random_encoder_{self.backend}"
            models["random"], checkpoint = self._finetune_classifier(
                self.random_dir, self._random_encoder_source(models["pretrained"]), "ring_classifier")
            self.echo(f"  random-encoder classifier's best checkpoint: {checkpoint}")
        if c.compare_random_encoder and 0 < c.few_labels < len(self.ring_train):
            few = self.ring_train.sample(n=c.few_labels, random_state=c.seed)
            self.echo(f"  the same two again on only {c.few_labels} of the {len(self.ring_train)} training galaxies")
            for key, source in (("pretrained", dict(zoobot_checkpoint_loc=str(self.tree_checkpoint))),
                                ("random", self._random_encoder_source(models["pretrained"]))):
                folder = self.save_dir / f"finetuned_rings_{c.few_labels}_labels_{key}_encoder_{self.backend}"
                models[f"{key}_few_labels"], _ = self._finetune_classifier(folder, source, "ring_classifier", few)
        self._timed("finetune", started)
        return models

    def _write_ring_splits(self) -> None:
        """The ring train / val / test splits as catalogs, for the report's command lines."""
        folder = self.save_dir / "data" / "rings"
        for split, frame in (("train", self.ring_train), ("val", self.ring_val), ("test", self.ring_test)):
            frame.to_parquet(folder / f"{split}_catalog.parquet", index=False)

    def _random_encoder_source(self, pretrained_model) -> dict:
        """Encoder arguments for the same architecture as the tree model's, randomly initialised."""
        channels = int(getattr(pretrained_model, "channels", 3))
        if channels == 3:
            return dict(name="tiny_cnn")  # the public spelling: 'tiny_cnn' is always randomly initialised (RGB)
        if self.backend == "pytorch":
            from zoobot.pytorch.estimators.pretrained_encoders import create_encoder
        else:
            from zoobot.tensorflow.estimators.define_model import create_encoder
        return dict(encoder=create_encoder("tiny_cnn", channels=channels))

    def _finetune_classifier(self, folder: pathlib.Path, encoder_source: dict, stable_name: str,
                             train_catalog: pd.DataFrame | None = None):
        """Finetune one ring classifier into ``folder`` (on ``train_catalog``, by default all the training
        galaxies); its best checkpoint is copied to ``folder/stable_name``."""
        finetune, datasets = self._module("finetune"), self._module("datasets")
        c = self.config
        if folder.exists():
            shutil.rmtree(folder)  # finetuning is quick: always redo it (no stale checkpoints)
        model = finetune.FinetuneableZoobotClassifier(
            num_classes=2, n_blocks=c.finetune_blocks, learning_rate=c.finetune_learning_rate, seed=c.seed,
            **encoder_source,
        )
        datamodule = datasets.GalaxyDataModule(
            label_cols=["ring"], train_catalog=self.ring_train if train_catalog is None else train_catalog,
            val_catalog=self.ring_val,
            test_catalog=self.ring_test, batch_size=c.finetune_batch_size, resize_after_crop=c.image_size,
            greyscale=int(getattr(model, "channels", 1)) == 1, num_workers=self.num_workers, seed=c.seed,
        )
        trainer = finetune.get_trainer(str(folder), accelerator="cpu", devices=1,
                                       max_epochs=c.finetune_epochs, patience=c.finetune_epochs)
        trainer.fit(model, datamodule)
        best = pathlib.Path(trainer.checkpoint_callback.best_model_path)
        stable = folder / f"{stable_name}{_CHECKPOINT_SUFFIX[self.backend]}"
        shutil.copyfile(best, stable)
        from zoobot.shared.training_config import write_run_config

        # lets `zoobot predict --checkpoint ...` find the image size the classifier was trained at
        write_run_config(folder, {"task": "classification", "label_cols": ["ring"], "num_classes": 2,
                                  "resize_after_crop": c.image_size, "n_blocks": c.finetune_blocks,
                                  "best_checkpoint": str(best),
                                  "encoder": encoder_source.get("zoobot_checkpoint_loc", "tiny_cnn, randomly initialised")},
                         self.backend)
        return finetune.FinetuneableZoobotClassifier.load_from_checkpoint(str(stable)), stable

    def _skip(self, step: str, reason: str) -> None:
        self.skipped.append(f"{step}: {reason}")
        self.step += 1
        self.echo(f"\n[{self.step}/{self.n_steps}] Skipping {step}: {reason}")

    # ------------------------------------------------------------------------- step 5
    def predict_rings(self, models: dict) -> None:
        """Step 5: predict the held-out ring galaxies; accuracy, ROC AUC, calibration, example grid.

        The classifier from the pretrained encoder is the demo's; the one from a random encoder and the
        pixel-statistics baseline show how much of its skill pretraining and the images bring.
        """
        from zoobot.shared import plots
        from zoobot.shared.metrics import ring_baseline_auc

        started = time.time()
        test = self.ring_test
        self._say(f"Predicting the {len(test)} held-out ring / no-ring galaxies")
        y = test["ring"].to_numpy(dtype=int)
        p_ring = self._predict_ring_probability(models["pretrained"], "rings", "ring_predictions.parquet")
        self.metrics["rings"] = _ring_metrics(y, p_ring)
        m = self.metrics["rings"]
        self.echo(f"  accuracy {m['accuracy']:.2f} (always guessing the majority class: {m['majority_accuracy']:.2f}), "
                  f"ROC AUC {m['roc_auc']:.2f}")
        if "random" in models:
            p_random = self._predict_ring_probability(models["random"], "rings_random_encoder",
                                                     "ring_predictions_random_encoder.parquet")
            self.metrics["rings_random_encoder"] = _ring_metrics(y, p_random)
            r = self.metrics["rings_random_encoder"]
            self.echo(f"  from a random encoder instead: accuracy {r['accuracy']:.2f}, ROC AUC {r['roc_auc']:.2f}")
        if "pretrained_few_labels" in models:
            n = self.config.few_labels
            for key, suffix in (("pretrained", ""), ("random", "_random_encoder")):
                p = self._predict_ring_probability(models[f"{key}_few_labels"], f"rings_few_labels{suffix}",
                                                   f"ring_predictions_{n}_labels{suffix}.parquet")
                self.metrics[f"rings_few_labels{suffix}"] = _ring_metrics(y, p)
            few, few_random = self.metrics["rings_few_labels"], self.metrics["rings_few_labels_random_encoder"]
            self.echo(f"  trained on only {n} galaxies: ROC AUC {few['roc_auc']:.2f} from the pretrained encoder, "
                      f"{few_random['roc_auc']:.2f} from a random one")
        baseline = ring_baseline_auc(self.rings_catalog, "ring", features=_PIXEL_BASELINE_FEATURES, seed=self.config.seed)
        self.metrics["rings_pixel_baseline_auc"] = baseline
        self.echo(f"  logistic regression on image total flux + second moment alone: ROC AUC {baseline:.2f}")
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

    def _predict_ring_probability(self, model, key: str, file_name: str) -> np.ndarray:
        """p(ring) of every held-out galaxy, also written to ``predictions/file_name``."""
        save_loc = self.save_dir / "predictions" / file_name
        probabilities = self._module("predict").predict(
            self.ring_test, model, n_samples=1, label_cols=["not_ring", "ring"], save_loc=str(save_loc),
            datamodule_kwargs=dict(resize_after_crop=self.config.image_size, batch_size=128,
                                   num_workers=self.num_workers),
        )
        self.predictions[key] = save_loc
        return probabilities[:, 1, :].mean(axis=1)

    # ------------------------------------------------------------------------- step 6
    def write_report(self, started: float) -> pathlib.Path:
        """Step 6: training curves, metrics.json and report.md."""
        from zoobot.shared import plots

        self._say("Writing the report")
        runs = {"Pretraining (decision tree, from scratch)": self.save_dir / f"pretrained_tree_{self.backend}"
                / "logs" / "metrics.csv"}
        if getattr(self, "finetune_dir", None) is not None:
            runs["Ring classifier, pretrained encoder"] = self.finetune_dir / "logs" / "metrics.csv"
        if getattr(self, "random_dir", None) is not None:
            runs["Ring classifier, random encoder"] = self.random_dir / "logs" / "metrics.csv"
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

def _tree_metrics(table: pd.DataFrame, n_galaxies: int) -> dict:
    """The report's numbers from :func:`zoobot.shared.metrics.evaluate_predictions`' table.

    MAE: reach-weighted mean absolute error of the vote fractions against the true probabilities, for the
    model and for the average training galaxy (``train_mean``). Coverage: how often the 90 % interval
    holds the true probability, for the model and for one image-blind Dirichlet fitted to the training
    votes (``constant_dirichlet``).
    """
    from zoobot.shared.metrics import POOLED

    def row(question, predictor, column):
        value = table.loc[(table.question == question) & (table.predictor == predictor), column]
        return None if value.empty or not np.isfinite(value.iloc[0]) else float(value.iloc[0])

    questions = [q for q in table.question.unique() if q != POOLED]
    per_question = {
        q: {"galaxies": int(table.loc[(table.question == q) & (table.predictor == "model"), "n_galaxies"].iloc[0]),
            "mae": row(q, "model", "truth_mae"), "baseline_mae": row(q, "train_mean", "truth_mae"),
            "coverage": row(q, "model", "truth_coverage"),
            "baseline_coverage": row(q, "constant_dirichlet", "truth_coverage")}
        for q in questions
    }
    mae, baseline = row(POOLED, "model", "truth_mae"), row(POOLED, "train_mean", "truth_mae")
    return {
        "galaxies": int(n_galaxies),
        "mae": mae,
        "baseline_mae": baseline,
        "mae_ratio": mae / baseline,
        "coverage": row(POOLED, "model", "truth_coverage"),
        "baseline_coverage": row(POOLED, "constant_dirichlet", "truth_coverage"),
        "nll": row(POOLED, "model", "nll_dirichlet_multinomial"),
        "baseline_nll": row(POOLED, "constant_dirichlet", "nll_dirichlet_multinomial"),
        "per_question": per_question,
    }


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """scikit-learn's ROC AUC; NaN (not an exception) when the test set holds a single class."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


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


def _shown(demo: _Demo, path) -> str:
    """``path`` as the user can type it: relative to the working directory when inside it, else absolute."""
    path = pathlib.Path(path)
    try:
        return path.relative_to(pathlib.Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _report_text(demo: _Demo) -> str:
    sections = [_report_intro(demo), _report_tree(demo)]
    if "rings" in demo.metrics:
        sections.append(_report_rings(demo))
    if "training_curves" in demo.figures:
        sections.append(["## Training curves", "", f"![Training curves]({_rel(demo, demo.figures['training_curves'])})",
                         ""])
    sections += [_report_files(demo), ["## Timings", "",
                                       ", ".join(f"{k}: {v:.0f} s" for k, v in demo.timings.items()), ""],
                 _report_next_steps(demo)]
    return "\n".join(line for section in sections for line in section)


def _report_intro(demo: _Demo) -> list:
    c = demo.config
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
        f"`train(schema=decals_dr5_ortho_schema, model_architecture='tiny_cnn', color={c.color}, "
        f"batch_size={c.pretrain_batch_size}, epochs={c.pretrain_epochs}, learning_rate={c.pretrain_learning_rate:g}, "
        f"scheduler_params={c.pretrain_schedule()})`; best checkpoint (lowest validation loss) "
        f"`{_rel(demo, demo.tree_checkpoint)}`.",
        "3. Predicted the vote fractions of the held-out 20 % of those galaxies and compared them, and their 90 % "
        "intervals, with the generator's true answer probabilities.",
    ]
    if "rings" in demo.metrics:
        lines.append(
            "4. Finetuned `FinetuneableZoobotClassifier(zoobot_checkpoint_loc=..., num_classes=2, "
            f"n_blocks={c.finetune_blocks})` on {len(demo.ring_train)} ring / no-ring galaxies "
            f"({len(demo.ring_val)} for validation, {_plural(c.finetune_epochs, 'epoch')})"
            + ("; then the same classifier from a randomly initialised `tiny_cnn` (`name='tiny_cnn'`), same settings."
               if "rings_random_encoder" in demo.metrics else "."))
        lines.append(f"5. Predicted the {len(demo.ring_test)} held-out ring / no-ring galaxies.")
    lines += [f"- Skipped {note}." for note in demo.skipped]
    return lines + [""]


def _report_tree(demo: _Demo) -> list:
    tree = demo.metrics["tree"]
    lines = [
        "## Decision-tree model: vote fractions of held-out galaxies",
        "",
        f"Mean absolute error of the predicted vote fractions against the true answer probabilities: "
        f"**{tree['mae']:.3f}**, against {tree['baseline_mae']:.3f} for predicting the average training galaxy every "
        f"time: **{tree['mae_ratio']:.2f} x** the baseline ({tree['galaxies']} galaxies). Each question counts by "
        "how likely it is to be asked (its reach), as in `zoobot.shared.metrics.truth_mae`.",
        "",
        f"How sure is the model? Its 90 % intervals (of each answer's Beta marginal) hold the true probability "
        f"**{tree['coverage'] * 100:.0f} %** of the time (ideal: 90 %; one image-blind Dirichlet fitted to the training votes: "
        f"{_fmt(tree['baseline_coverage'] * 100, 0)} %). Below 90 % the model is overconfident, above it "
        "underconfident.",
        "",
        "| question | galaxies | MAE model | MAE average galaxy | 90 % coverage model | 90 % coverage constant Dirichlet |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for question, row in tree["per_question"].items():
        lines.append(f"| {question} | {row['galaxies']} | {_fmt(row['mae'])} | {_fmt(row['baseline_mae'])} | "
                     f"{_fmt(row['coverage'], 2)} | {_fmt(row['baseline_coverage'], 2)} |")
    lines += [
        "",
        f"![Predicted vs true vote fractions]({_rel(demo, demo.figures['vote_fractions'])})",
        "",
        "Reliability plot. Left: of all the votes on answers predicted with a vote fraction near x, a fraction x "
        "went to that answer when the fractions are calibrated (the diagonal). Right: the same coverage question "
        "as above at every interval level, for the observed votes (beta-binomial predictive intervals) and for "
        "the true probabilities; below the diagonal the model is overconfident.",
        "",
        f"![Reliability of the intervals]({_rel(demo, demo.figures['reliability'])})",
        "",
    ]
    return lines


def _report_rings(demo: _Demo) -> list:
    m = demo.metrics
    r, rand = m["rings"], m.get("rings_random_encoder")
    pixel = m.get("rings_pixel_baseline_auc")
    header = "| metric | pretrained encoder |" + (" random encoder |" if rand else "") + \
        " pixel statistics | constant guess |"
    rule = "|---|---:|" + ("---:|" if rand else "") + "---:|---:|"

    def line(name, key, pixel_value, constant):
        cells = [name, _fmt(r[key])] + ([_fmt(rand[key])] if rand else []) + [pixel_value, constant]
        return "| " + " | ".join(cells) + " |"

    lines = [
        "## Ring classifier: held-out galaxies",
        "",
        "The same classifier twice: finetuned from the pretrained tree model's encoder, and from a randomly "
        "initialised one (same architecture, data, epochs and learning rates). The difference is what pretraining "
        "on the votes brings. *Pixel statistics* is a logistic regression on each image's total flux and second "
        "moment alone (`zoobot.shared.metrics.ring_baseline_auc`, 5-fold cross-validated on all "
        f"{len(demo.rings_catalog)} labelled galaxies): how far brightness and size alone go.",
        "",
        header,
        rule,
        line("accuracy (p >= 0.5)", "accuracy", "-", f"{r['majority_accuracy']:.3f}"),
        line("ROC AUC", "roc_auc", _fmt(pixel), "0.500"),
        line("Brier score (lower is better)", "brier", "-", f"{r['brier_constant']:.3f}"),
        *_few_labels_rows(demo),
        "",
        f"{r['rings']} of the {r['galaxies']} test galaxies are rings; the classifier from the pretrained encoder finds "
        f"{r['true_positives']} of them, with {r['false_positives']} false alarms.",
        "",
        f"![Example galaxies]({_rel(demo, demo.figures['galaxies'])})",
        "",
        f"![Calibration curve]({_rel(demo, demo.figures['calibration'])})",
        "",
    ]
    return lines


def _few_labels_rows(demo: _Demo) -> list:
    """The ROC AUC row of the two classifiers finetuned on ``few_labels`` galaxies, with the sentence after it."""
    few, few_random = demo.metrics.get("rings_few_labels"), demo.metrics.get("rings_few_labels_random_encoder")
    if few is None:
        return []
    n = demo.config.few_labels
    return [f"| ROC AUC, trained on only {n} galaxies | {_fmt(few['roc_auc'])} | {_fmt(few_random['roc_auc'])} | - | 0.500 |",
            "",
            f"Pretraining matters most when labels are few: the last row finetunes both encoders on only {n} of the "
            f"{len(demo.ring_train)} training galaxies (the same validation and test galaxies). With all of them, a "
            "small encoder from scratch can learn these synthetic rings too."]


def _report_files(demo: _Demo) -> list:
    d, b, suffix = demo.save_dir, demo.backend, _CHECKPOINT_SUFFIX[demo.backend]
    lines = [
        "## Files",
        "",
        "Paths as you can type them from where the demo ran:",
        "",
        f"- `{_shown(demo, d / 'data' / 'votes' / 'catalog.parquet')}`: the {demo.config.n_pretrain} galaxies with "
        "volunteer votes (`id_str`, `file_loc`, one count column per answer, `..._true-prob`); the tree model's "
        f"splits are in `{_shown(demo, d / f'pretrained_tree_{b}')}/{{train,val,test}}_catalog.parquet`",
        f"- `{_shown(demo, d / 'data' / 'rings' / 'catalog.parquet')}`: the labelled ring / no-ring galaxies "
        "(`id_str`, `file_loc`, `ring`); their splits are `train_catalog.parquet`, `val_catalog.parquet` and "
        "`test_catalog.parquet` in the same folder",
        f"- `{_shown(demo, demo.tree_checkpoint)}`: the tree model (its best checkpoint)",
    ]
    if getattr(demo, "ring_checkpoint", None) is not None:
        lines.append(f"- `{_shown(demo, demo.ring_checkpoint)}`: the ring classifier (its best checkpoint; "
                     f"`checkpoints/last{suffix}` next to it is only the last epoch)")
    for name, path in demo.predictions.items():
        lines.append(f"- `{_shown(demo, path)}`: {_PREDICTION_FILES[name]}, one row per `id_str` "
                     "(read with `zoobot.shared.load_predictions.load`)")
    lines += [f"- `{_shown(demo, d / 'metrics.json')}`: the numbers above, the settings and the time per step", ""]
    return lines


_PREDICTION_FILES = {
    "tree": "the tree model's Dirichlet concentrations for the held-out vote galaxies",
    "rings": "p(ring) of the held-out ring / no-ring galaxies, classifier from the pretrained encoder",
    "rings_random_encoder": "the same from the random-encoder classifier",
    "rings_few_labels": "the same from the classifier finetuned from the pretrained encoder on few labels",
    "rings_few_labels_random_encoder": "the same from the classifier trained from a random encoder on few labels",
}


def _report_next_steps(demo: _Demo) -> list:
    d, b, c = demo.save_dir, demo.backend, demo.config
    zoobot = "zoobot" if b == "pytorch" else "zoobot --backend tensorflow"
    lines = ["## Next steps", ""]
    if getattr(demo, "ring_checkpoint", None) is not None:
        lines += [
            "Predict galaxies with the demo's ring classifier (its best checkpoint):",
            "",
            "```bash",
            f"{zoobot} predict --catalog {_shown(demo, d / 'data' / 'rings' / 'test_catalog.parquet')} "
            f"--checkpoint {_shown(demo, demo.ring_checkpoint)} --save-loc ring_predictions.parquet --num-workers 0",
            "```",
            "",
        ]
    lines += [
        "Finetune your own classifier from the demo's tree model (offline; a CPU-sized run):",
        "",
        "```bash",
        f"{zoobot} finetune --catalog {_shown(demo, d / 'data' / 'rings' / 'catalog.parquet')} --label-cols ring "
        f"--checkpoint {_shown(demo, demo.tree_checkpoint)} --n-blocks {c.finetune_blocks} "
        f"--learning-rate {c.finetune_learning_rate:g} --max-epochs {c.finetune_epochs} "
        f"--resize-size {demo.config.image_size} --num-workers 0 --save-dir my_rings",
        "```",
        "",
        "- For real galaxies start from a pretrained Zoobot encoder (`--name hf-hub:mwalmsley/zoobot-encoder-"
        "convnext_nano`, downloaded once): see `docs/guides/finetuning.md` and `docs/pretrained_models.md`.",
        f"- Training a tree model from scratch: `docs/guides/training_from_scratch_{b}.md`.",
        "",
    ]
    return lines
