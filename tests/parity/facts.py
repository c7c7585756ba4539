"""Facts about one backend, computed by the same code for both, so that the parity tests compare like with like.

Every function takes ``backend`` ('pytorch' or 'tensorflow') and imports that framework only. The PyTorch
facts are computed in the test process; the TensorFlow facts in a subprocess (``tf_side.py``), because
torchvision must never be imported after TensorFlow in one process.
"""
from __future__ import annotations

import importlib
import inspect
import json
import pathlib

import numpy as np
import pandas as pd

#: Module pairs below ``zoobot.<backend>`` whose shared names must have identical signatures.
MODULES = {
    "datasets": "datasets",
    "datasets.decals_dr8": "datasets.decals_dr8",
    "estimators.define_model": "estimators.define_model",
    "training.losses": "training.losses",
    "training.train": {"pytorch": "training.train_with_pytorch_lightning", "tensorflow": "training.train_with_keras"},
    "training.finetune": "training.finetune",
    "predictions.predict_on_catalog": "predictions.predict_on_catalog",
    "training.representations": "training.representations",
    "onnx_export": "onnx_export",
}
#: Functions with a backend word in their name: (module key, PyTorch name, TensorFlow name).
RENAMED = [
    ("estimators.define_model", "get_pytorch_encoder", "get_tensorflow_encoder"),
    ("estimators.define_model", "get_pytorch_dirichlet_head", "get_tensorflow_dirichlet_head"),
]
#: Class methods compared too when both backends define them (constructors are always compared).
METHODS = ("load_from_checkpoint", "load_from_name")
SCHEMA_NAME = "decals_dr5_ortho"


def _module(backend: str, key: str):
    rel = MODULES[key] if isinstance(MODULES[key], str) else MODULES[key][backend]
    return importlib.import_module(f"zoobot.{backend}.{rel}")


def describe(obj) -> list:
    """A signature as JSON: ``[name, kind, repr(default)]`` per parameter; ``*args``/``**kwargs`` names are
    not part of the interface (they cannot be passed by name), so they are written as ``*``/``**``."""
    parameters = []
    for p in inspect.signature(obj).parameters.values():
        name = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(p.kind, p.name)
        default = "<required>" if p.default is inspect.Parameter.empty else repr(p.default)
        parameters.append([name, p.kind.name, default])
    return parameters


def signatures(backend: str) -> dict:
    """``{'<module key>.<name>[.<method>]': signature}`` for every public zoobot callable of the module pairs."""
    out = {}
    for key in MODULES:
        module = _module(backend, key)
        names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name, None)
            if not callable(obj) or not str(getattr(obj, "__module__", "")).startswith("zoobot"):
                continue
            if inspect.isclass(obj):
                out[f"{key}.{name}"] = describe(obj.__init__)
                for method in METHODS:
                    if method in vars(obj) or any(method in vars(base) for base in obj.__mro__[1:]
                                                  if base.__module__.startswith("zoobot")):
                        out[f"{key}.{name}.{method}"] = describe(getattr(obj, method))
            else:
                out[f"{key}.{name}"] = describe(obj)
    for key, torch_name, tf_name in RENAMED:
        name = torch_name if backend == "pytorch" else tf_name
        out[f"{key}.{torch_name}|{tf_name}"] = describe(getattr(_module(backend, key), name))
    return out


# ---------------------------------------------------------------------------------------------- losses

def loss_inputs(seed: int = 0):
    """Vote counts and concentrations for the decals_dr5_ortho tree, with unasked (all-zero) questions."""
    from zoobot.shared import schemas

    schema = schemas.get_schema(SCHEMA_NAME)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 30, (12, schema.n_answers)).astype(np.float32)
    zero = rng.random((12, schema.n_questions)) < 0.3
    for q, (start, end) in enumerate(schema.question_index_groups):
        counts[zero[:, q], start:end + 1] = 0
    concentrations = (1 + 100 * rng.random((12, schema.n_answers))).astype(np.float32)
    return counts, concentrations, zero


def loss_facts(backend: str) -> dict:
    """Per-question loss (B, Q), the reduced loss of ``get_multiquestion_loss`` and its gradient."""
    from zoobot.shared import schemas

    groups = schemas.get_schema(SCHEMA_NAME).question_index_groups
    counts, concentrations, _ = loss_inputs()
    losses = importlib.import_module(f"zoobot.{backend}.training.losses")
    if backend == "pytorch":
        import torch

        labels, predictions = torch.from_numpy(counts), torch.from_numpy(concentrations).requires_grad_(True)
        per_question = losses.calculate_multiquestion_loss(labels, predictions, groups)
        reduced = losses.get_multiquestion_loss(groups)(labels, predictions)
        reduced.backward()
        gradient = predictions.grad.numpy()
        per_question, reduced = per_question.detach().numpy(), float(reduced.detach())
    else:
        import tensorflow as tf

        predictions = tf.Variable(concentrations)
        with tf.GradientTape() as tape:
            reduced = losses.get_multiquestion_loss(groups)(counts, predictions)
        gradient = tape.gradient(reduced, predictions).numpy()
        per_question = losses.calculate_multiquestion_loss(counts, concentrations, groups).numpy()
        reduced = float(reduced)
    return {"per_question": per_question.tolist(), "reduced": reduced, "gradient": gradient.tolist(),
            "dtype": str(per_question.dtype)}


# ---------------------------------------------------------------------------------------------- models

def model_facts(backend: str) -> dict:
    """Trainable parameter counts of tiny_cnn (1 and 3 channels) and of a tiny_cnn ZoobotTree."""
    from zoobot.shared import schemas

    define_model = importlib.import_module(f"zoobot.{backend}.estimators.define_model")
    schema = schemas.get_schema(SCHEMA_NAME)
    if backend == "pytorch":
        def count(module):
            return sum(p.numel() for p in module.parameters() if p.requires_grad)
    else:
        def count(layer):
            return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    facts = {f"tiny_cnn_{c}": count(define_model.get_encoder("tiny_cnn", channels=c)) for c in (1, 3)}
    tree = define_model.ZoobotTree(schema.n_answers, schema=schema, architecture_name="tiny_cnn", channels=1)
    if backend == "tensorflow":
        tree(np.zeros((1, 32, 32, 1), dtype="float32"))
    facts["zoobot_tree"] = count(tree)
    head = define_model.get_dirichlet_head(128, schema.n_answers, True, 0.2)
    if backend == "tensorflow":
        head(np.zeros((1, 128), dtype="float32"))
    facts["dirichlet_head"] = count(head)
    return facts


def train_batchnorm_facts(backend: str) -> list:
    """[momentum (PyTorch's convention), epsilon, count] of the BatchNorm layers of the efficientnet_b0 encoder
    that ``train()`` builds: the backends must train the same network."""
    from collections import Counter

    from zoobot.shared import schemas
    from zoobot.shared.training_config import TrainConfig

    config = TrainConfig.from_arguments("train", backend, save_dir="unused", schema=schemas.get_schema(SCHEMA_NAME),
                                        model_architecture="efficientnet_b0")
    if backend == "pytorch":
        import torch

        from zoobot.pytorch.training.train_with_pytorch_lightning import _model

        layers = [m for m in _model(config).encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        settings = [(m.momentum, m.eps) for m in layers]
    else:
        import keras

        from zoobot.tensorflow.training.callbacks import all_layers
        from zoobot.tensorflow.training.train_with_keras import _build_model

        layers = [m for m in all_layers(_build_model(config).encoder) if isinstance(m, keras.layers.BatchNormalization)]
        settings = [(1.0 - m.momentum, m.epsilon) for m in layers]
    counts = Counter((round(momentum, 6), round(eps, 9)) for momentum, eps in settings)
    return sorted([momentum, eps, n] for (momentum, eps), n in counts.items())


# ---------------------------------------------------------------------------------------------- splits

def split_facts(backend: str, catalog: pd.DataFrame) -> dict:
    """``id_str`` of each split of the backend's GalaxyDataModule, for a few seeds and fractions."""
    from zoobot.shared import schemas

    datasets = importlib.import_module(f"zoobot.{backend}.datasets")
    label_cols = schemas.get_schema(SCHEMA_NAME).label_cols
    out = {}
    for seed, fractions in ((42, (0.7, 0.1, 0.2)), (7, (0.6, 0.2, 0.2))):
        datamodule = datasets.GalaxyDataModule(label_cols, catalog=catalog, train_fraction=fractions[0],
                                               val_fraction=fractions[1], test_fraction=fractions[2], seed=seed,
                                               num_workers=0, resize_after_crop=32)
        out[f"seed{seed}"] = {split: getattr(datamodule, f"{split}_catalog")["id_str"].tolist()
                              for split in ("train", "val", "test")}
    return out


# ---------------------------------------------------------------------------------------------- prediction files

def prediction_layout(backend: str, catalog: pd.DataFrame, folder) -> dict:
    """Columns, metadata keys and datasets of the files ``predict`` writes for a tree and a classifier."""
    import h5py
    import pyarrow.parquet as pq

    from zoobot.shared import schemas

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    schema = schemas.get_schema(SCHEMA_NAME)
    predict = importlib.import_module(f"zoobot.{backend}.predictions.predict_on_catalog").predict
    define_model = importlib.import_module(f"zoobot.{backend}.estimators.define_model")
    finetune = importlib.import_module(f"zoobot.{backend}.training.finetune")
    options = {"num_workers": 0, "resize_after_crop": 32, "batch_size": 4}
    broken = folder / "broken.jpg"
    broken.write_bytes(b"")
    with_broken = pd.concat([catalog, pd.DataFrame({"id_str": ["broken"], "file_loc": [str(broken)]})],
                            ignore_index=True)

    tree = define_model.ZoobotTree(schema.n_answers, schema=schema, architecture_name="tiny_cnn", channels=1)
    classifier = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=3)
    facts = {}
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*could not be read")
        for suffix in (".parquet", ".hdf5", ".csv"):
            predict(with_broken, tree, n_samples=2, save_loc=folder / f"tree{suffix}", check_valid_paths=False,
                    datamodule_kwargs=options)
        predict(catalog, classifier, save_loc=folder / "classifier.parquet", datamodule_kwargs=options)

    for name in ("tree", "classifier"):
        parquet = pq.read_table(folder / f"{name}.parquet")
        metadata = {k.decode(): json.loads(v) for k, v in (parquet.schema.metadata or {}).items()
                    if not k.startswith(b"pandas")}
        facts[f"{name}_parquet_columns"] = parquet.column_names
        facts[f"{name}_parquet_metadata"] = metadata
    with h5py.File(folder / "tree.hdf5", "r") as f:
        facts["tree_hdf5_datasets"] = sorted(f.keys())
        facts["tree_hdf5_attrs"] = sorted(f.attrs.keys())
        facts["tree_hdf5_shape"] = list(f["predictions"].shape)
    facts["tree_csv_columns"] = pd.read_csv(folder / "tree.csv", nrows=1).columns.tolist()
    failures = pd.read_csv(folder / "tree_failures.csv", dtype=str)
    facts["failures_columns"] = failures.columns.tolist()
    facts["failures_ids"] = failures["id_str"].tolist()
    return facts


def all_facts(backend: str, catalog: pd.DataFrame, folder) -> dict:
    return {"signatures": signatures(backend), "losses": loss_facts(backend), "models": model_facts(backend),
            "train_batchnorm": train_batchnorm_facts(backend), "splits": split_facts(backend, catalog),
            "prediction_files": prediction_layout(backend, catalog, folder)}
