"""Run one benchmark workload through *upstream* Zoobot, in the environment where it is installed.

Started by ``_common.run_peer`` as ``PEER_PYTHON -I _peer_worker.py WORKLOAD SPEC.json OUT.json``:
``-I`` keeps this checkout off ``sys.path``, so ``import zoobot`` finds the peer environment's
package (upstream Zoobot 2.x, PyTorch). Nothing of upstream is copied here: these are calls of its
public API, written from its documented signatures (``train_default_zoobot_from_scratch``,
``predict_on_catalog.predict``, ``define_model.ZoobotTree``, ``finetune.FinetuneableZoobotClassifier``,
``finetune.get_trainer``). Every call made is recorded in the output next to the installed versions;
an exception is recorded (``error``, ``traceback``) instead of crashing, so a partial upstream
install still yields a report.

Workloads: ``ceiling`` (timm encoder images/s with the peer's torch), ``train``, ``predict``, ``finetune``.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # _common only (stdlib at import time)
import _common as C  # noqa: E402


def versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "executable": sys.executable}
    for name in ("zoobot", "galaxy-datasets", "torch", "torchvision", "timm", "lightning", "pytorch-lightning",
                 "tensorflow", "keras"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import zoobot

        out["zoobot_path"] = os.path.dirname(zoobot.__file__)
    except Exception as err:  # noqa: BLE001 - reported
        out["zoobot_path"] = f"import failed: {err}"
    return out


def _catalog(records: dict):
    import pandas as pd

    return pd.DataFrame(records)


def _lightning_callback_base():
    """The Callback class of whichever Lightning package upstream's trainer uses."""
    for module_name in ("lightning.pytorch", "pytorch_lightning"):
        if module_name.split(".")[0] in sys.modules:
            return __import__(module_name, fromlist=["Callback"]).Callback
    try:
        import lightning.pytorch as lp

        return lp.Callback
    except ImportError:
        import pytorch_lightning as pl

        return pl.Callback


def _view_configs(spec: dict, greyscale: bool):
    """Upstream 2.x's (train, test) transform configs at the benchmark's output size.

    Training: galaxy-datasets' ``default_view_config()`` (its default augmentations); evaluation:
    ``fast_view_config()`` (centre crop + resize only). Both with the benchmark's size and channels.
    """
    from galaxy_datasets import transforms

    train_cfg, test_cfg = transforms.default_view_config(), transforms.fast_view_config()
    for cfg in (train_cfg, test_cfg):
        cfg.output_size = spec["image_size"]
        cfg.greyscale = greyscale
    return train_cfg, test_cfg


def _describe(name: str, value) -> str:
    """How a call argument is written in the report."""
    if name.endswith("catalog"):
        return "<DataFrame>"
    if name == "extra_callbacks":
        return "<Timer>"
    if name.endswith("cfg"):
        return f"<{name}: output_size={value.output_size}, greyscale={value.greyscale}>"
    return repr(value)


def ceiling(spec: dict, calls: list) -> dict:
    torch = C.setup_torch(spec["threads"])
    import timm

    out = {}
    for memory_format in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        calls.append(f"timm.create_model({spec['architecture']!r}, num_classes=0, in_chans={spec['channels']})")
        encoder = timm.create_model(spec["architecture"], num_classes=0, in_chans=spec["channels"])
        x = torch.rand(spec["batch_size"], spec["channels"], spec["image_size"], spec["image_size"])
        if memory_format == "channels_last":
            encoder = encoder.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        encoder.train()

        def train_step():
            encoder.zero_grad(set_to_none=True)
            encoder(x).sum().backward()
            return spec["batch_size"]

        encoder_eval = encoder

        def eval_step():
            encoder_eval.eval()
            with torch.inference_mode():
                for _ in range(3):
                    encoder_eval(x)
            return 3 * spec["batch_size"]

        out[memory_format] = {"train": C.measure(train_step, spec["repeats"], spec["warmup"]),
                              "eval": C.measure(eval_step, spec["repeats"], spec["warmup"])}
    return out


def train(spec: dict, calls: list) -> dict:
    C.setup_torch(spec["threads"])
    from zoobot.pytorch.training import train_with_pytorch_lightning
    from zoobot.shared import schemas

    schema = schemas.decals_dr5_ortho_schema
    train_catalog, val_catalog = _catalog(spec["train_catalog"]), _catalog(spec["val_catalog"])
    missing = [c for c in schema.label_cols if c not in train_catalog.columns]
    if missing:
        raise ValueError(f"upstream decals_dr5_ortho_schema label columns missing from the synthetic catalog: "
                         f"{missing[:5]}")
    base = _lightning_callback_base()

    class Timer(base):
        def __init__(self):
            self.events = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.events.append({"start": time.perf_counter(), "cpu_start": time.process_time(), "batch_start": [],
                                "batch_end": []})

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
            self.events[-1]["batch_start"].append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
            self.events[-1]["batch_end"].append(time.perf_counter())
            self.events[-1]["cpu_end"] = time.process_time()

    timer = Timer()
    epochs = spec["warmup"] + spec["repeats"]
    train_cfg, test_cfg = _view_configs(spec, greyscale=True)
    kwargs = dict(save_dir=os.path.join(spec["workdir"], "train"), schema=schema, train_catalog=train_catalog,
                  val_catalog=val_catalog, test_catalog=val_catalog.copy(), architecture_name=spec["architecture"],
                  batch_size=spec["batch_size"], epochs=epochs, patience=1000, train_transform_cfg=train_cfg,
                  test_transform_cfg=test_cfg, gpus=0, num_workers=spec["num_workers"],
                  extra_callbacks=[timer])
    calls.append("train_with_pytorch_lightning.train_default_zoobot_from_scratch(" + ", ".join(
        f"{k}={_describe(k, v)}" for k, v in kwargs.items() if k != "schema")
        + ", schema=schemas.decals_dr5_ortho_schema)")
    train_with_pytorch_lightning.train_default_zoobot_from_scratch(**kwargs)
    epochs_out = []
    for epoch in timer.events:
        if not epoch["batch_end"]:
            continue
        wait, previous = 0.0, epoch["start"]
        for s, e in zip(epoch["batch_start"], epoch["batch_end"]):
            wait += s - previous
            previous = e
        seconds = epoch["batch_end"][-1] - epoch["start"]
        epochs_out.append({"images": len(epoch["batch_end"]) * spec["batch_size"], "seconds": seconds,
                           "data_wait_s": wait, "step_s": seconds - wait,
                           "main_cpu_s": epoch["cpu_end"] - epoch["cpu_start"]})
    timed = epochs_out[spec["warmup"]:] or epochs_out
    return {"epochs": epochs_out,
            "train": C.rate_summary([e["images"] for e in timed], [e["seconds"] for e in timed]),
            "steps_only": C.rate_summary([e["images"] for e in timed], [e["step_s"] for e in timed]),
            "data_wait_fraction": C.summarise([e["data_wait_s"] / e["seconds"] for e in timed]),
            "per_cpu_second": C.summarise([e["images"] / e["main_cpu_s"] for e in timed]),
            "ceiling": {"train": ceiling(dict(spec, channels=1), [])["channels_last"]["train"]}}


def predict(spec: dict, calls: list) -> dict:
    C.setup_torch(spec["threads"])
    from zoobot.pytorch.estimators import define_model
    from zoobot.pytorch.predictions import predict_on_catalog
    from zoobot.shared import schemas

    schema = schemas.decals_dr5_ortho_schema
    catalog = _catalog(spec["catalog"])
    calls.append(f"define_model.ZoobotTree(output_dim={len(schema.label_cols)}, question_answer_pairs=schema."
                 f"question_answer_pairs, dependencies=schema.dependencies, architecture_name="
                 f"{spec['architecture']!r}, channels=1)")
    class ZoobotTreeForDictBatches(define_model.ZoobotTree):
        """Upstream 2.9's ZoobotTree.predict_step passes galaxy-datasets 0.0.25's {'image': ...} predict
        batches straight to forward, which asserts a tensor; unpack them (nothing else changes)."""

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch["image"] if isinstance(batch, dict) else batch)

    calls.append("(ZoobotTree subclassed only to unpack dict predict batches: upstream 2.9's predict_step "
                 "passes galaxy-datasets 0.0.25's {'image': x} batches to forward, which rejects them)")
    model = ZoobotTreeForDictBatches(output_dim=len(schema.label_cols),
                                    question_answer_pairs=schema.question_answer_pairs,
                                    dependencies=schema.dependencies, architecture_name=spec["architecture"],
                                    channels=1)
    from galaxy_datasets import transforms

    _, test_cfg = _view_configs(spec, greyscale=True)
    inference_transform = transforms.get_galaxy_transform(test_cfg)
    datamodule_kwargs = {"batch_size": spec["batch_size"], "num_workers": spec["num_workers"]}
    trainer_kwargs = {"accelerator": "cpu", "devices": 1, "logger": False}
    out = {}
    # upstream 2.x's predict has no n_samples: one call gives one sample per galaxy, so only
    # n_samples=1 is measured; k samples of MC dropout cost k calls there.
    for k in [k for k in spec["samples"] if k == 1]:
        counts, seconds = [], []
        for rep in range(spec["warmup"] + spec["repeats"]):
            save_loc = os.path.join(spec["workdir"], f"predictions_{rep}_{k}.csv")
            os.makedirs(spec["workdir"], exist_ok=True)
            start = time.perf_counter()
            predict_on_catalog.predict(catalog, model, save_loc, list(schema.label_cols), inference_transform,
                                       datamodule_kwargs=datamodule_kwargs, trainer_kwargs=trainer_kwargs)
            if rep >= spec["warmup"]:
                counts.append(len(catalog))
                seconds.append(time.perf_counter() - start)
        out[f"n_samples_{k}"] = C.rate_summary(counts, seconds)
    calls.append(f"predict_on_catalog.predict(catalog, model, save_loc.csv, label_cols, "
                 f"inference_transform=get_galaxy_transform(<fast_view_config(): output_size={spec['image_size']}, "
                 f"greyscale=True>), datamodule_kwargs={datamodule_kwargs!r}, trainer_kwargs={trainer_kwargs!r})")
    out["ceiling"] = {"eval": ceiling(dict(spec, channels=1), [])["channels_last"]["eval"]}
    return out


def finetune(spec: dict, calls: list) -> dict:
    C.setup_torch(spec["threads"])
    import timm
    from zoobot.pytorch.training import finetune as upstream_finetune

    from galaxy_datasets import transforms
    from galaxy_datasets.pytorch.galaxy_datamodule import CatalogDataModule

    base = _lightning_callback_base()

    class Timer(base):
        def __init__(self):
            self.fit_start, self.starts, self.end = None, [], None

        def on_fit_start(self, trainer, pl_module):
            self.fit_start = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

        def on_fit_end(self, trainer, pl_module):
            self.end = time.perf_counter()

    encoder = timm.create_model(spec["architecture"], num_classes=0, in_chans=3)
    model = upstream_finetune.FinetuneableZoobotClassifier(encoder=encoder, num_classes=2, label_col="ring",
                                                           training_mode="head_only")
    # the same deterministic training transform as our benchmark (centre crop + resize, colour)
    _, test_cfg = _view_configs(spec, greyscale=False)
    transform = transforms.get_galaxy_transform(test_cfg)
    datamodule = CatalogDataModule(label_cols=["ring"], train_transform=transform, test_transform=transform,
                                   train_catalog=_catalog(spec["train_catalog"]),
                                   val_catalog=_catalog(spec["val_catalog"]),
                                   test_catalog=_catalog(spec["val_catalog"]), batch_size=spec["batch_size"],
                                   num_workers=spec["num_workers"])
    trainer = upstream_finetune.get_trainer(os.path.join(spec["workdir"], "finetune"), accelerator="cpu",
                                            max_epochs=spec["warmup"] + spec["repeats"], patience=1000)
    timer = Timer()
    trainer.callbacks.append(timer)
    calls.append(f"finetune.get_trainer(save_dir, accelerator='cpu', max_epochs={spec['warmup'] + spec['repeats']}, "
                 f"patience=1000).fit(finetune.FinetuneableZoobotClassifier(encoder=timm.create_model("
                 f"{spec['architecture']!r}, num_classes=0), num_classes=2, label_col='ring', "
                 f"training_mode='head_only'), galaxy_datasets.pytorch.galaxy_datamodule.CatalogDataModule("
                 f"label_cols=['ring'], train_transform=test_transform=get_galaxy_transform(<fast_view_config(): "
                 f"output_size={spec['image_size']}, colour>), train/val/test catalogs, "
                 f"batch_size={spec['batch_size']}, num_workers={spec['num_workers']}))")
    trainer.fit(model, datamodule)
    marks = timer.starts + [timer.end]
    if timer.fit_start is not None:  # epoch 1 counts from the start of fit, as in bench_finetune
        marks[0] = min(marks[0], timer.fit_start)
    epochs = [b - a for a, b in zip(marks[:-1], marks[1:])]
    first, later = epochs[:spec["warmup"]], epochs[spec["warmup"]:]
    n_images = len(spec["train_catalog"]["id_str"]) + len(spec["val_catalog"]["id_str"])
    result = {"epoch_seconds": epochs, "first_epoch_s": first[0] if first else None,
              "later_epochs_s": C.summarise(later) if later else None,
              "first_epoch_img_per_s": n_images / first[0] if first else None}
    if first and later:
        result["speedup_later_vs_first"] = first[0] / result["later_epochs_s"]["median"]
    return {"default": result, "ceiling": {"contiguous": ceiling(dict(spec, channels=3), [])["contiguous"]}}


WORKLOADS = {"ceiling": ceiling, "train": train, "predict": predict, "finetune": finetune}


#: Our test encoder has no upstream twin; quick runs (which only check that the mode works) give
#: upstream timm's smallest test model instead. Full runs use the same architecture on both sides.
QUICK_STAND_INS = {"tiny_cnn": "test_efficientnet"}


def main() -> int:
    workload, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(pathlib.Path(spec_path).read_text())
    stand_in = QUICK_STAND_INS.get(spec.get("architecture"))
    if stand_in:
        spec["requested_architecture"], spec["architecture"] = spec["architecture"], stand_in
    os.makedirs(spec["workdir"], exist_ok=True)
    calls: list = []
    result = {"workload": workload, "versions": versions(), "calls": calls}
    if stand_in:
        result["architecture_stand_in"] = f"{spec['requested_architecture']} -> {stand_in} (not in upstream)"
    try:
        if workload not in WORKLOADS:
            raise ValueError(f"unknown peer workload {workload!r}; known: {sorted(WORKLOADS)}")
        result.update(WORKLOADS[workload](spec, calls))
    except BaseException as err:  # noqa: BLE001 - the report says what failed
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()[-4000:]
    pathlib.Path(out_path).write_text(json.dumps(result, default=C._json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
