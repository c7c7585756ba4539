"""``zoobot schemas`` and ``zoobot info``: what is available here (decision trees, versions, devices)."""
from __future__ import annotations

import importlib.metadata
import platform
import sys

import click

from zoobot.cli._common import common_options

_PACKAGES = {
    "core": ("numpy", "pandas", "scipy", "pillow", "pyarrow", "click", "tqdm"),
    "pytorch": ("torch", "torchvision", "timm", "lightning", "torchmetrics"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "keras"),
    "optional": ("astropy", "h5py", "matplotlib", "scikit-learn", "huggingface-hub", "wandb"),
}


@click.command("schemas")
@click.argument("name", required=False)
@common_options
def schemas_command(name):
    """List the prebuilt decision trees, or show the questions and answers of one (NAME)."""
    from zoobot.shared import schemas

    if name is None:
        from zoobot.shared.schema_guide import RECOMMENDED, describe

        names = schemas.list_schemas()
        width = max(len(n) for n in names)
        click.echo(f"{'name':<{width}}  questions  answers  description")
        for schema_name in names:
            schema = schemas.get_schema(schema_name)
            click.echo(f"{schema_name:<{width}}  {schema.n_questions:>9}  {schema.n_answers:>7}  "
                       f"{describe(schema_name)}")
        click.echo(
            f"\n{len(names)} schemas. Start with {RECOMMENDED} unless your votes come from another campaign. "
            "'ortho' trees put the campaign in each column name (e.g. smooth-or-featured-dr5_smooth), so "
            "catalogs of several campaigns can be combined.\n"
            "Show one with `zoobot schemas NAME`; use one with `--schema NAME`."
        )
        return
    schema = schemas.get_schema(name)
    click.echo(f"{schema.name}: {schema.n_questions} questions, {schema.n_answers} answers (label columns)")
    for question in schema.questions:
        asked = f"asked after {question.asked_after.text}" if question.asked_after is not None else "always asked"
        click.echo(f"\n{question.text}  ({asked})")
        for answer in question.answers:
            click.echo(f"  {answer.text}")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_devices() -> str:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"CUDA: {', '.join(names)}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple MPS"
    return f"CPU only ({torch.get_num_threads()} threads)"


def _tf_devices() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU: {len(gpus)} device(s)" if gpus else "CPU only"


@click.command("info")
@click.option("--no-devices", is_flag=True, help="Skip importing the frameworks to list devices (faster).")
@common_options
def info_command(no_devices):
    """Versions of zoobot and its dependencies, installed backends and visible devices."""
    import zoobot

    click.echo(f"zoobot {zoobot.__version__} (format version {zoobot.FORMAT_VERSION})")
    click.echo(f"python {platform.python_version()} on {platform.platform()}  ({sys.executable})")
    for group, packages in _PACKAGES.items():
        found = [(p, _version(p)) for p in packages]
        if group == "tensorflow" and any(v for p, v in found if p.startswith("tensorflow")):
            found = [(p, v) for p, v in found if v or not p.startswith("tensorflow")]  # either build is fine
        shown = ", ".join(f"{p} {v}" if v else f"{p} (not installed)" for p, v in found)
        click.echo(f"{group + ':':<11} {shown}")
    for backend, probe in (("pytorch", _torch_devices), ("tensorflow", _tf_devices)):
        packages = ("torch",) if backend == "pytorch" else ("tensorflow",)
        if not any(_version(p) for p in packages) and not (backend == "tensorflow" and _version("tensorflow-cpu")):
            click.echo(f"backend {backend}: not installed (pip install \"zoobot[{backend}]\")")
            continue
        if no_devices:
            click.echo(f"backend {backend}: installed")
            continue
        try:
            devices = probe()
        except Exception as error:  # noqa: BLE001 - info must still print the rest
            devices = f"unavailable ({type(error).__name__}: {error})"
        click.echo(f"backend {backend}: installed; devices: {devices}")


COMMANDS = [schemas_command, info_command]
