"""What the ``zoobot`` commands share: global state, options, and loading catalogs, schemas and models.

Nothing here imports a deep-learning framework at module level; :func:`backend_module` and
:func:`load_model` import the chosen backend when a command needs it.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import pathlib

import click

BACKENDS = ("pytorch", "tensorflow")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Python packages that make up each backend (for "not installed" messages).
_BACKEND_PACKAGES = {
    "pytorch": ("torch", "torchvision", "timm", "lightning", "torchmetrics"),
    "tensorflow": ("tensorflow", "keras"),
}
_FRAMEWORK_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "tensorflow",
                      "absl", "keras")


class _State:
    """Options of the current invocation (set by the group and by each command's common options)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.backend = "pytorch"
        self.debug = False
        self.log_level = "INFO"

    @staticmethod
    def env_debug() -> bool:
        return os.environ.get("ZOOBOT_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


STATE = _State()


# ---------------------------------------------------------------------------------------------
# logging and errors
# ---------------------------------------------------------------------------------------------

def configure_logging(level: str) -> None:
    """Send zoobot's log records at ``level`` and above to stderr; set the frameworks' loggers to ``level``.

    Lightning, TensorFlow and Keras print through their own handlers; only their level is set here,
    so nothing is printed twice. Their INFO lines (device availability, tips) say nothing about the run:
    they are shown only at ``DEBUG``; at the default ``INFO`` the frameworks' loggers are at ``WARNING``.
    Python warnings go through the ``py.warnings`` logger, one line each without the source line.
    """
    numeric = getattr(logging, level.upper())
    logger = logging.getLogger("zoobot")
    if not any(getattr(handler, "_zoobot_cli", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._zoobot_cli = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(numeric)
    for name in _FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    _warnings_as_one_line()
    # TensorFlow's C++ start-up chatter (CPU feature notes) unless debugging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if numeric <= logging.DEBUG else "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _warnings_as_one_line() -> None:
    """Print each Python warning once, as ``WARNING <Category>: message``, without the source line."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        logging.getLogger("zoobot.warnings").warning("%s: %s", category.__name__, " ".join(str(message).split()))

    if getattr(warnings.showwarning, "_zoobot_cli", False):
        return
    show._zoobot_cli = True
    warnings.showwarning = show


def one_line(error: BaseException) -> str:
    """``'CatalogError: <message with whitespace collapsed>'``: an error as one line of text."""
    message = " ".join(str(error).split()) or repr(error)
    if isinstance(error, KeyError) and message.startswith("'"):
        message = f"missing key {message}"
    return f"{type(error).__name__}: {message}"


# ---------------------------------------------------------------------------------------------
# options every command accepts (also after the command name)
# ---------------------------------------------------------------------------------------------

def _set_backend(ctx, param, value):
    if value is not None:
        STATE.backend = value
    return value


def _set_log_level(ctx, param, value):
    if value is not None:
        STATE.log_level = value.upper()
        configure_logging(STATE.log_level)
    return value


def _set_debug(ctx, param, value):
    if value:
        STATE.debug = True
    return value


def common_options(command):
    """Add ``--backend``, ``--log-level`` and ``--debug`` to a command (they override the global ones)."""
    command = click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                           help="Full tracebacks instead of one-line errors.")(command)
    command = click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default=None,
                           expose_value=False, callback=_set_log_level,
                           help="Logging level (default: the global option, INFO).")(command)
    command = click.option("--backend", type=click.Choice(BACKENDS), default=None, expose_value=False,
                           callback=_set_backend, is_eager=True,
                           help="pytorch or tensorflow (default: the global option, pytorch).")(command)
    return command


def _cap_default_workers(ctx, param, value):
    """The default ``--num-workers`` is at most the usable CPU cores (a value the user typed is kept)."""
    if ctx.get_parameter_source(param.name) is click.core.ParameterSource.DEFAULT:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        return min(value, cores)
    return value


def num_workers_option(help: str | None = None):
    """``--num-workers`` (default 4, capped at the usable CPU cores so that small machines get no warning)."""
    return click.option("--num-workers", type=click.IntRange(min=0), default=4,
                        show_default="4, at most the CPU cores", callback=_cap_default_workers, help=help)


def catalog_options(command):
    """``--catalog`` or ``--train-catalog/--val-catalog/--test-catalog`` (csv or parquet files)."""
    path = click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
    command = click.option("--test-catalog", type=path, default=None,
                           help="Explicit test split (optional, with --train-catalog).")(command)
    command = click.option("--val-catalog", type=path, default=None,
                           help="Explicit validation split (with --train-catalog).")(command)
    command = click.option("--train-catalog", type=path, default=None,
                           help="Explicit training split (needs --val-catalog).")(command)
    command = click.option("--catalog", type=path, default=None,
                           help="One catalog (.csv/.parquet: id_str, file_loc, labels), split 70/10/20.")(command)
    return command


def read_catalogs(catalog, train_catalog, val_catalog, test_catalog, *, required: bool = True) -> dict:
    """Load the catalog files given on the command line; a usage error (exit 2) for a bad combination."""
    if catalog is not None and any(c is not None for c in (train_catalog, val_catalog, test_catalog)):
        raise click.UsageError("Give either --catalog or --train-catalog/--val-catalog(/--test-catalog), not both.")
    if catalog is None and (train_catalog is None) != (val_catalog is None):
        raise click.UsageError("--train-catalog and --val-catalog go together (--test-catalog is optional).")
    if catalog is None and train_catalog is None and test_catalog is not None:
        raise click.UsageError("--test-catalog needs --train-catalog and --val-catalog.")
    if required and catalog is None and train_catalog is None:
        raise click.UsageError("Missing option '--catalog' (or '--train-catalog' with '--val-catalog').")
    from zoobot.shared.catalogs import load_catalog

    loaded = {}
    for key, path in (("catalog", catalog), ("train_catalog", train_catalog), ("val_catalog", val_catalog),
                      ("test_catalog", test_catalog)):
        loaded[key] = None if path is None else load_catalog(path)
    return loaded


def split_label_cols(values) -> list[str]:
    """``--label-cols a --label-cols b`` or ``--label-cols a,b`` -> ``['a', 'b']``."""
    cols = [c.strip() for value in values for c in str(value).split(",") if c.strip()]
    return cols


# ---------------------------------------------------------------------------------------------
# schemas
# ---------------------------------------------------------------------------------------------

def resolve_schema(schema_name: str | None, schema_file, *, required: bool = True):
    """A Schema from ``--schema NAME`` or ``--schema-file tree.json`` (exactly one)."""
    from zoobot.shared import schemas

    if schema_name is not None and schema_file is not None:
        raise click.UsageError("Give --schema NAME or --schema-file FILE, not both.")
    if schema_name is not None:
        return schemas.get_schema(schema_name)
    if schema_file is not None:
        with open(schema_file) as handle:
            try:
                tree = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"--schema-file {str(schema_file)!r} is not valid JSON: {error}") from None
        missing = [key for key in ("question_answer_pairs", "dependencies") if key not in tree]
        if not isinstance(tree, dict) or missing:
            raise ValueError(
                f"--schema-file {str(schema_file)!r} must be a JSON object with keys 'question_answer_pairs' and "
                f"'dependencies' (optionally 'name'); missing {missing}."
            )
        return schemas.Schema(tree["question_answer_pairs"], tree["dependencies"],
                              name=tree.get("name", pathlib.Path(schema_file).stem))
    if required:
        raise click.UsageError("Missing option '--schema' NAME (see `zoobot schemas`) or '--schema-file' FILE.")
    return None


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------

def backend_module(relative: str, backend: str | None = None):
    """Import ``zoobot.<backend>.<relative>``, turning a missing framework into E12."""
    backend = backend or STATE.backend
    name = f"zoobot.{backend}.{relative}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing in _BACKEND_PACKAGES[backend]:
            from zoobot.shared.errors import missing_dependency

            raise missing_dependency(missing, f"The {backend} backend", backend) from error
        if (error.name or "").startswith(f"zoobot.{backend}"):
            raise NotImplementedError(
                f"This installation of zoobot has no module {error.name!r}, needed by this command with "
                f"--backend {backend}."
            ) from error
        raise


def available_gpus(backend: str | None = None) -> int:
    """Number of GPUs the backend can see (0 on CPU-only machines)."""
    backend = backend or STATE.backend
    if backend == "pytorch":
        import torch

        return torch.cuda.device_count()
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def finetune_classes(backend: str | None = None) -> dict:
    """``{'classification': FinetuneableZoobotClassifier, 'regression': ..., 'tree': ...}``."""
    finetune = backend_module("training.finetune", backend)
    return {
        "classification": finetune.FinetuneableZoobotClassifier,
        "regression": finetune.FinetuneableZoobotRegressor,
        "tree": finetune.FinetuneableZoobotTree,
    }


def load_model(checkpoint, backend: str | None = None):
    """Load a model saved by ``zoobot train`` or ``zoobot finetune`` (either backend's format).

    PyTorch ``.ckpt`` files are read with ``weights_only=True``; the model class is read from the
    checkpoint (``model_class``) when stored, otherwise from its hyperparameters. TensorFlow
    ``.keras`` files are loaded with Keras (our classes are registered serialisables).
    """
    backend = backend or STATE.backend
    checkpoint = pathlib.Path(checkpoint)
    suffix = checkpoint.suffix.lower()
    if backend == "pytorch" and suffix == ".keras":
        raise ValueError(f"{str(checkpoint)!r} is a Keras model: load it with --backend tensorflow.")
    if backend == "tensorflow" and suffix == ".ckpt":
        raise ValueError(f"{str(checkpoint)!r} is a PyTorch checkpoint: load it with --backend pytorch.")
    if backend == "pytorch":
        return _load_torch_model(checkpoint)
    return _load_keras_model(checkpoint)


def _load_torch_model(checkpoint: pathlib.Path):
    import torch

    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = contents.get("hyper_parameters", {}) if isinstance(contents, dict) else {}
    model_class = contents.get("model_class") if isinstance(contents, dict) else None
    if model_class is None:
        if "num_classes" in hparams:
            model_class = "FinetuneableZoobotClassifier"
        elif "unit_interval" in hparams or "loss" in hparams:
            model_class = "FinetuneableZoobotRegressor"
        elif "n_blocks" in hparams:
            model_class = "FinetuneableZoobotTree"
        elif "output_dim" in hparams:
            model_class = "ZoobotTree"
        else:
            raise ValueError(
                f"{str(checkpoint)!r} does not look like a zoobot checkpoint (no zoobot hyperparameters); "
                "give a checkpoint written by `zoobot train` or `zoobot finetune`."
            )
    model_class = str(model_class).rsplit(".", 1)[-1]
    if model_class == "ZoobotTree":
        cls = backend_module("estimators.define_model", "pytorch").ZoobotTree
    else:
        cls = getattr(backend_module("training.finetune", "pytorch"), model_class)
    return cls.load_from_checkpoint(str(checkpoint))


def _load_keras_model(checkpoint: pathlib.Path):
    backend_module("estimators.define_model", "tensorflow")  # registers ZoobotTree and the custom layers
    try:
        backend_module("training.finetune", "tensorflow")  # registers the finetuning classes, when present
    except NotImplementedError:
        pass
    import keras

    return keras.saving.load_model(str(checkpoint))


def publish_best_checkpoint(best, save_dir) -> pathlib.Path | None:
    """Make the best checkpoint of a run reachable as ``save_dir/best.ckpt`` (``best.keras``), a name to type.

    The checkpoints folder names files by epoch (``epoch=7.ckpt``), so a command line written before the
    run cannot know it; ``best.*`` is a hard link to that file (a copy where links are not possible),
    replaced when a resumed run ends. Returns the new path, or None when there is no best checkpoint.
    """
    if not best or not os.path.isfile(best):
        return None
    best = pathlib.Path(best)
    target = pathlib.Path(save_dir) / f"best{best.suffix}"
    if target.exists() and target.resolve() == best.resolve():
        return target
    target.unlink(missing_ok=True)
    try:
        os.link(best, target)
    except OSError:
        import shutil

        shutil.copy2(best, target)
    return target


def report_test_metrics(metrics: dict, save_dir) -> pathlib.Path | None:
    """Print the test-split metrics on one line and save them to ``save_dir/test_metrics.json``."""
    import math

    numbers = {}
    for key, value in (metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and "test" in key:
            numbers[str(key)] = number
    if not numbers:
        return None
    path = pathlib.Path(save_dir) / "test_metrics.json"
    path.write_text(json.dumps(numbers, indent=2, sort_keys=True) + "\n")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(numbers.items())
                      if "/question_loss/" not in k and "/campaign_loss/" not in k)
    click.echo(f"Test metrics: {shown} (all in {path})")
    return path


def training_input_size(checkpoint, default: int | None = None) -> int | None:
    """Image size a checkpoint was trained at, from ``config.json`` of its training folder, else ``default``.

    ``zoobot train``/``finetune`` write ``save_dir/config.json`` next to ``save_dir/checkpoints/``.
    """
    checkpoint = pathlib.Path(checkpoint)
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        config = folder / "config.json"
        if config.is_file():
            try:
                values = json.loads(config.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for key in ("resize_after_crop", "resize_size", "input_size"):
                if isinstance(values.get(key), int):
                    return values[key]
    return default
