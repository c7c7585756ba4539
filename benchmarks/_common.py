"""Helpers shared by every benchmark script: settings, timing, memory, threads, data, tables, JSON.

Read top to bottom:

1. settings: the command-line options every script has (``--quick``, ``--threads``, ``--out``,
   ``--repeats``, ``--peer-python`` ...) and the two presets (quick / full);
2. environment: thread settings applied *before* a framework is imported, machine description;
3. timing and memory: :func:`measure` (warm-up, then timed repetitions -> median/min/max),
   :func:`peak_rss_mb`;
4. worker processes: each backend runs in its own process (:func:`run_worker`), so PyTorch and
   TensorFlow never compute at the same time and each gets the same threads;
5. ceilings: raw encoder images/s on random tensors already in memory, per framework;
6. synthetic data: jpg catalogs made with :mod:`zoobot.shared.synthetic` (cached on disk);
7. peer mode: run the same workload through upstream Zoobot installed in another environment;
8. output: markdown tables printed to stdout and a JSON file.

This module imports no framework at import time: every framework import happens inside a worker.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
#: Default folder of JSON results (git-ignored).
RESULTS_DIR = HERE / "results"
#: Default cache of generated synthetic images (git-ignored, reused between runs).
DEFAULT_DATA_DIR = pathlib.Path(tempfile.gettempdir()) / "zoobot_benchmark_data"
BACKENDS = ("torch", "tf")

# ------------------------------------------------------------------------------------------------
# 1. settings
# ------------------------------------------------------------------------------------------------

#: Full mode: the settings of issue 7 (224 px EfficientNet-B0, batch 32, 2 threads, 424 px jpgs).
FULL = dict(image_size=224, architecture="efficientnet_b0", batch_size=32, source_size=424)
#: Quick mode: tiny sizes for the test suite (finishes in seconds).
QUICK = dict(image_size=32, architecture="tiny_cnn", batch_size=8, source_size=64)


def make_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script shares; scripts add their own."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (32 px, tiny_cnn, a few images): checks the script runs, in seconds")
    parser.add_argument("--threads", type=int, default=2,
                        help="compute threads (torch.set_num_threads, TF intra-op) and data-loading workers")
    parser.add_argument("--out", default=None,
                        help="JSON results file (default benchmarks/results/<script>.json)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up repetitions")
    parser.add_argument("--backends", default="torch,tf",
                        help="comma-separated backends to run: torch, tf")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default 224; quick 32)")
    parser.add_argument("--architecture", default=None,
                        help="encoder (default efficientnet_b0; quick tiny_cnn)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 32; quick 8)")
    parser.add_argument("--source-size", type=int, default=None,
                        help="side of the jpg files on disk (default 424; quick 64)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="cache folder of the generated synthetic jpgs")
    parser.add_argument("--peer-python", default=None, metavar="PATH",
                        help="python of a separate environment with upstream Zoobot installed: run the same "
                             "workload through it, side by side")
    # internal: a script re-runs itself with --worker BACKEND in a fresh process
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return parser


def resolve_settings(args: argparse.Namespace) -> dict:
    """The preset (quick or full) with the explicit options on top; validates them."""
    preset = dict(QUICK if args.quick else FULL)
    for key in ("image_size", "architecture", "batch_size", "source_size"):
        value = getattr(args, key)
        if value is not None:
            preset[key] = value
    if args.threads < 1:
        usage_error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1 or args.warmup < 0:
        usage_error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        usage_error(f"--backends: unknown {unknown}; choose from {list(BACKENDS)}")
    preset.update(threads=args.threads, repeats=args.repeats, warmup=args.warmup, quick=bool(args.quick),
                  backends=backends, data_dir=args.data_dir)
    return preset


def usage_error(message: str) -> None:
    """Print ``message`` and exit with status 2 (a usage error), before any work is done."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_peer_python(path: str | None) -> str | None:
    """Fail clearly (exit status 2) when ``--peer-python`` does not name a runnable python.

    Returns the absolute path (symlinks kept: a virtual environment's ``bin/python`` is a symlink).
    """
    if path is None:
        return None
    target = pathlib.Path(os.path.abspath(path))
    if not target.exists():
        usage_error(
            f"--peer-python {path}: no such file. Give the python executable of a separate environment with "
            "upstream Zoobot installed, e.g. /opt/zoobot-upstream/bin/python "
            "(python -m venv /opt/zoobot-upstream && /opt/zoobot-upstream/bin/pip install 'zoobot[pytorch]')."
        )
    if not target.is_file() or not os.access(target, os.X_OK):
        usage_error(f"--peer-python {path}: not an executable file (give the environment's bin/python).")
    return str(target)


def default_out(script: str) -> pathlib.Path:
    return RESULTS_DIR / f"{pathlib.Path(script).stem}.json"


# ------------------------------------------------------------------------------------------------
# 2. environment
# ------------------------------------------------------------------------------------------------

def thread_env(threads: int) -> dict:
    """Environment variables that fix thread counts before any framework starts."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": "ignore",
        "TQDM_DISABLE": "1",
    })
    return env


def setup_torch(threads: int):
    """Import torch with ``threads`` intra-op threads and one inter-op thread; returns the module."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (inter-op pool started)
        pass
    return torch


def setup_tf(threads: int, inter_op_threads: int = 1):
    """Import TensorFlow with ``threads`` intra-op threads and ``inter_op_threads`` inter-op threads (one unless
    a workload needs more: see ``bench_predict``); returns the module."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # TF already initialised: the environment variables applied
        pass
    tf.get_logger().setLevel("ERROR")
    return tf


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """What the numbers were measured on (no framework is imported)."""
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "nproc": cores,
        "cpu": cpu,
        "load_average_1_5_15": load,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("zoobot", "torch", "torchvision", "timm", "lightning", "tensorflow", "tensorflow-cpu", "keras",
                      "numpy", "pillow")},
    }


# ------------------------------------------------------------------------------------------------
# 3. timing and memory
# ------------------------------------------------------------------------------------------------

def summarise(values: Sequence[float]) -> dict:
    """Median, min, max and the raw values of timed repetitions."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def measure(fn: Callable[[], float | None], repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    ``fn`` returns the number of items it processed (images); the result summarises items/second.
    If ``fn`` returns None the result summarises seconds instead (``{'unit': 's'}``).
    ``per_cpu_second`` counts the CPU time of this process only (not of data-loader workers).
    """
    for _ in range(warmup):
        fn()
    rates, seconds, cpu_rates, per_second = [], [], [], True
    for _ in range(repeats):
        cpu_start = time.process_time()
        start = time.perf_counter()
        count = fn()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        seconds.append(elapsed)
        if count is None:
            per_second = False
        else:
            rates.append(count / elapsed)
            cpu_rates.append(count / cpu if cpu > 0 else float("nan"))
    out = summarise(rates) if per_second else summarise(seconds)
    out["unit"] = "img/s" if per_second else "s"
    out["seconds"] = summarise(seconds)
    if per_second:
        # images per CPU-second of this process (all its threads): robust to other load on the machine
        out["per_cpu_second"] = summarise(cpu_rates)
    return out


def rate_summary(counts: Sequence[int], seconds: Sequence[float]) -> dict:
    """items/s summary from separately timed (count, seconds) pairs."""
    out = summarise([c / s for c, s in zip(counts, seconds)])
    out["unit"] = "img/s"
    out["seconds"] = summarise(seconds)
    return out


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or the largest of its waited-for children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kib = resource.getrusage(who).ru_maxrss  # KiB on Linux
    return kib / 1024.0


def current_rss_mb() -> float:
    """Resident set size now, in MiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError):
        return peak_rss_mb()


def ratio(a, b) -> float | None:
    """a / b for two summaries or numbers (medians), None if either is missing."""
    a = a.get("median") if isinstance(a, dict) else a
    b = b.get("median") if isinstance(b, dict) else b
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


# ------------------------------------------------------------------------------------------------
# 4. worker processes
# ------------------------------------------------------------------------------------------------

def worker_argv(argv: Sequence[str]) -> list[str]:
    """The orchestrator's own arguments, minus options a worker must not inherit."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--out", "--worker", "--worker-out", "--peer-python"):
            skip = True
            continue
        if item.startswith(("--out=", "--worker=", "--worker-out=", "--peer-python=")):
            continue
        out.append(item)
    return out


def run_worker(script: str, backend: str, argv: Sequence[str], threads: int, extra: Sequence[str] = (),
               timeout: float | None = None) -> dict:
    """Run ``script --worker backend`` in a fresh process (threads fixed by environment) and return the
    JSON it writes. The worker's output is shown only if it fails."""
    with tempfile.TemporaryDirectory(prefix="zoobot_bench_") as tmp:
        out = pathlib.Path(tmp) / "worker.json"
        cmd = [sys.executable, str(script), *worker_argv(argv), "--worker", backend, "--worker-out", str(out),
               *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=thread_env(threads), cwd=str(REPO), capture_output=True, text=True,
                              timeout=timeout)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]).strip()
            raise RuntimeError(f"benchmark worker failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        result = json.loads(out.read_text())
    result.setdefault("process_seconds", elapsed)
    return result


def write_worker_result(path: str, result: dict) -> None:
    pathlib.Path(path).write_text(json.dumps(result, default=_json_default))


# ------------------------------------------------------------------------------------------------
# 5. ceilings: raw encoder speed on random tensors (framework imported lazily)
# ------------------------------------------------------------------------------------------------

def torch_ceiling_step(architecture: str, channels: int, size: int, batch_size: int, mode: str = "train",
                       memory_format: str = "channels_last", batches: int = 1) -> Callable[[], int]:
    """A function running ``batches`` raw-encoder batches on a random batch in memory; returns the images done.

    'train' = forward + backward of ``features.sum()`` (gradients of every weight); 'eval' = forward
    under ``torch.inference_mode``. ``memory_format`` 'channels_last' or 'contiguous' (NCHW).
    """
    import torch

    from zoobot.pytorch.estimators.define_model import get_pytorch_encoder

    torch.manual_seed(0)
    encoder = get_pytorch_encoder(architecture, channels=channels)
    x = torch.rand(batch_size, channels, size, size)
    if memory_format == "channels_last":
        encoder = encoder.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    encoder.train(mode == "train")

    def train_step():
        for _ in range(batches):
            encoder.zero_grad(set_to_none=True)
            encoder(x).sum().backward()
        return batch_size * batches

    def eval_step():
        with torch.inference_mode():
            for _ in range(batches):
                encoder(x)
        return batch_size * batches

    return train_step if mode == "train" else eval_step


def torch_encoder_rates(architecture: str, channels: int, size: int, batch_size: int, repeats: int, warmup: int,
                        memory_format: str = "channels_last", modes: Sequence[str] = ("train", "eval"),
                        batches_per_rep: dict | None = None) -> dict:
    """Images/s of a randomly initialised zoobot/timm encoder on a random batch already in memory
    (:func:`torch_ceiling_step`), per mode."""
    batches_per_rep = batches_per_rep or {"train": 1, "eval": 3}
    return {mode: measure(torch_ceiling_step(architecture, channels, size, batch_size, mode, memory_format,
                                             batches_per_rep[mode]), repeats, warmup)
            for mode in ("train", "eval") if mode in modes}


def tf_ceiling_step(architecture: str, channels: int, size: int, batch_size: int, mode: str = "train",
                    batches: int = 1) -> Callable[[], int]:
    """The TensorFlow twin of :func:`torch_ceiling_step`: a compiled ``tf.function`` computing the gradients
    of ``features.sum()`` w.r.t. every trainable weight ('train', ``training=True``) or the forward pass
    ('eval', ``training=False``)."""
    import tensorflow as tf

    from zoobot.tensorflow.estimators.define_model import get_encoder as get_tensorflow_encoder

    tf.random.set_seed(0)
    encoder = get_tensorflow_encoder(architecture, channels=channels, input_shape=(size, size, channels))
    x = tf.random.uniform((batch_size, size, size, channels))

    @tf.function
    def grads(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(encoder(images, training=True))
        return tape.gradient(loss, encoder.trainable_variables)

    @tf.function
    def forward(images):
        return encoder(images, training=False)

    def train_step():
        for _ in range(batches):
            result = grads(x)
        _ = result[0].numpy()
        return batch_size * batches

    def eval_step():
        for _ in range(batches):
            result = forward(x)
        _ = result.numpy()
        return batch_size * batches

    step = train_step if mode == "train" else eval_step
    step.forward, step.encoder = forward, encoder
    return step


def tf_encoder_rates(architecture: str, channels: int, size: int, batch_size: int, repeats: int, warmup: int,
                     modes: Sequence[str] = ("train", "eval"), batches_per_rep: dict | None = None) -> dict:
    """Images/s of a randomly initialised zoobot Keras encoder on a random batch in memory
    (:func:`tf_ceiling_step`), per mode; ``'_forward_fn'``/``'_encoder'`` hold the compiled forward pass
    and the encoder of the last mode, for callers that feed the same encoder from a pipeline."""
    batches_per_rep = batches_per_rep or {"train": 1, "eval": 3}
    out = {}
    for mode in ("train", "eval"):
        if mode in modes:
            step = tf_ceiling_step(architecture, channels, size, batch_size, mode, batches_per_rep[mode])
            out[mode] = measure(step, repeats, warmup)
            out["_forward_fn"], out["_encoder"] = step.forward, step.encoder
    return out


def strip_private(result: dict) -> dict:
    """Drop keys starting with '_' (live objects) before writing JSON."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------------
# 6. synthetic data
# ------------------------------------------------------------------------------------------------

def synthetic_catalog(data_dir, n_images: int, source_size: int, label: str = "votes", seed: int = 0,
                      n_workers: int = 1):
    """A catalog of ``n_images`` synthetic jpgs of ``source_size`` pixels (generated once, then reused).

    Returns ``(catalog, label_cols)`` as :func:`zoobot.shared.synthetic.make_synthetic_catalog`.
    """
    import pandas as pd

    from zoobot.shared.synthetic import GENERATOR_VERSION, make_synthetic_catalog

    root = pathlib.Path(data_dir) / f"{label}_n{n_images}_s{source_size}_seed{seed}_{GENERATOR_VERSION}"
    done = root / "done.json"
    if done.exists():
        info = json.loads(done.read_text())
        catalog = pd.read_parquet(root / "catalog.parquet")
        if len(catalog) == n_images and all(pathlib.Path(p).exists() for p in catalog["file_loc"][:5]):
            return catalog, info["label_cols"]
    if root.exists():
        shutil.rmtree(root)
    catalog, label_cols = make_synthetic_catalog(root, n_galaxies=n_images, image_size=source_size, label=label,
                                                 seed=seed, n_workers=n_workers, progress=False)
    done.write_text(json.dumps({"label_cols": list(label_cols)}))
    return catalog, list(label_cols)


def repeat_catalog(catalog, n_rows: int):
    """``n_rows`` rows cycling through ``catalog``'s images, each row with a unique ``id_str``."""
    import numpy as np

    index = np.arange(n_rows) % len(catalog)
    out = catalog.iloc[index].reset_index(drop=True).copy()
    out["id_str"] = [f"row{i:07d}" for i in range(n_rows)]
    return out


# ------------------------------------------------------------------------------------------------
# 7. peer mode (upstream Zoobot in another environment)
# ------------------------------------------------------------------------------------------------

PEER_WORKER = HERE / "_peer_worker.py"


def run_peer(peer_python: str, workload: str, spec: dict, timeout: float | None = None) -> dict:
    """Run ``workload`` through upstream Zoobot with ``peer_python`` (see ``_peer_worker.py``).

    The peer process starts in a temporary folder with only ``_peer_worker.py``'s folder on its
    path, so ``import zoobot`` finds the peer environment's (upstream) package, never this checkout.
    Returns the peer's JSON (versions, exact calls, timings), or ``{'error': ...}``.
    """
    with tempfile.TemporaryDirectory(prefix="zoobot_peer_") as tmp:
        spec_path, out_path = pathlib.Path(tmp) / "spec.json", pathlib.Path(tmp) / "peer.json"
        spec = dict(spec, workdir=str(pathlib.Path(tmp) / "work"))
        spec_path.write_text(json.dumps(spec, default=_json_default))
        env = thread_env(int(spec.get("threads", 2)))
        env.pop("PYTHONPATH", None)
        cmd = [peer_python, "-I", str(PEER_WORKER), workload, str(spec_path), str(out_path)]
        try:
            proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"peer run timed out after {timeout} s", "command": cmd}
        if not out_path.exists():
            return {"error": f"peer run failed (exit {proc.returncode})", "command": cmd,
                    "output_tail": (proc.stdout[-2000:] + proc.stderr[-4000:])}
        result = json.loads(out_path.read_text())
        result["command"] = cmd
        return result


# ------------------------------------------------------------------------------------------------
# 8. output
# ------------------------------------------------------------------------------------------------

def fmt(value, digits: int = 3) -> str:
    """A number for a table cell (3 significant digits), '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        if "median" not in value:
            return "-"
        return f"{fmt(value['median'], digits)} ({fmt(value['min'], digits)}-{fmt(value['max'], digits)})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured markdown table (cells formatted with :func:`fmt`)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def command_line(script: str, argv: Sequence[str]) -> str:
    return " ".join([".venv/bin/python", f"benchmarks/{pathlib.Path(script).name}", *argv])


def finish(script: str, args: argparse.Namespace, argv: Sequence[str], settings: dict, tables: dict,
           results: dict, notes: Sequence[str] = ()) -> dict:
    """Print the tables (markdown) and write the JSON results; returns the payload."""
    payload = {
        "benchmark": pathlib.Path(script).stem,
        "command": command_line(script, argv),
        "settings": settings,
        "machine": machine_info(),
        "results": results,
        "tables": tables,
        "notes": list(notes),
    }
    print(f"# {payload['benchmark']}  ({payload['command']})")
    m = payload["machine"]
    print(f"machine: {m['nproc']} cores, {m['cpu']}, load {m['load_average_1_5_15']}, threads {settings['threads']}")
    for title, table in tables.items():
        print(f"\n## {title}\n\n{table}")
    for note in notes:
        print(f"\nnote: {note}")
    out = pathlib.Path(args.out) if args.out else default_out(script)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=_json_default))
    print(f"\nresults written to {out}")
    return payload


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    if isinstance(value, pathlib.Path):
        return str(value)
    return repr(value)
