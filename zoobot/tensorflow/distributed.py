"""Multi-worker training with ``tf.distribute.MultiWorkerMirroredStrategy`` (see docs/guides/scaling_out.md).

The cluster comes from ``TF_CONFIG`` or, on SLURM, from TensorFlow's ``SlurmClusterResolver``. Every worker
runs the same script; the chief (worker 0) writes checkpoints, metrics and configs, the others write to a
temporary folder that is removed at the end (``worker_save_dir``).

Keras 3.15's ``Model.fit`` needs two adjustments under this strategy (keras-team/keras#20585), both in
:class:`MultiWorkerModelMixin`: the symbolic build before the first step is given one replica's batch, and
the per-step logs are reshaped to ``(1,)`` so that Keras's cross-worker mean over axis 0 is defined.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile

import tensorflow as tf

from zoobot.shared.run_dir import RUN_FILES

__all__ = ["cluster_resolver", "is_chief", "MultiWorkerModelMixin", "multi_worker_strategy", "worker_save_dir",
           "worker_count", "temporary_worker_dir", "check_workers_agree", "shard_by_data"]


def cluster_resolver(nodes: int) -> tf.distribute.cluster_resolver.ClusterResolver:
    """The cluster of ``nodes`` workers, from ``TF_CONFIG`` or SLURM's variables.

    Raises
    ------
    RuntimeError
        If neither describes a cluster, or the cluster's size is not ``nodes``.
    """
    if os.environ.get("TF_CONFIG"):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        source = "TF_CONFIG"
    elif os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_NTASKS"):
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        source = "SLURM"
    else:
        raise RuntimeError(
            f"nodes={nodes} needs a cluster description: set TF_CONFIG on every worker, or launch with srun "
            "(SLURM). See docs/guides/scaling_out.md for both launches."
        )
    spec = resolver.cluster_spec().as_dict()
    found = len(spec.get("worker", [])) + len(spec.get("chief", []))
    if found != nodes:
        raise RuntimeError(f"nodes={nodes} but the {source} cluster has {found} worker(s): {json.dumps(spec)}")
    return resolver


def multi_worker_strategy(nodes: int) -> tf.distribute.MultiWorkerMirroredStrategy:
    """A ``MultiWorkerMirroredStrategy`` over the cluster of :func:`cluster_resolver`.

    Raises
    ------
    RuntimeError
        No cluster of ``nodes`` workers (:func:`cluster_resolver`), or TensorFlow already ran something in this
        process: the strategy configures TensorFlow's collective operations, which is only possible before that.
    """
    resolver = cluster_resolver(nodes)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise RuntimeError(
            f"nodes={nodes}: the multi-worker strategy must be made before TensorFlow does anything else in this "
            "process (TensorFlow: 'collective ops must be configured at program startup'). Call "
            "train_with_keras.train(nodes=...) or finetune.get_trainer(..., num_nodes=...) first, before building "
            "a model or a dataset (docs/guides/scaling_out.md)."
        ) from err


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """Number of workers (1 for every single-machine strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes: the only one on a single machine, worker 0 (or ``chief``) in a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or worker_count(strategy) == 1:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def temporary_worker_dir(strategy: tf.distribute.Strategy) -> str:
    """A new temporary folder for a non-chief worker's files (``zoobot-worker<id>-...`` under ``TMPDIR``)."""
    return tempfile.mkdtemp(prefix=f"zoobot-worker{strategy.cluster_resolver.task_id}-")


@contextlib.contextmanager
def worker_save_dir(save_dir, strategy: tf.distribute.Strategy, copy_run: bool = False):
    """Yield ``save_dir`` on the chief, a temporary folder (removed afterwards) on the other workers.

    Every worker must save (saving runs collective operations), but only the chief's files are kept.

    Parameters
    ----------
    save_dir : str or path-like
    strategy : tf.distribute.Strategy
    copy_run : bool, default False
        The other workers start from a copy of the run files already in ``save_dir``
        (:data:`zoobot.shared.run_dir.RUN_FILES`: backup, checkpoints, logs, config), so that every worker
        decides alike whether to resume, refuse or start afresh, and restores the chief's backup. ``save_dir``
        is only read by them; all workers wait until every copy is made, so the chief changes nothing before.
    """
    several = worker_count(strategy) > 1
    if is_chief(strategy):
        if copy_run and several:
            check_workers_agree(strategy, 0, "copying the run")  # a barrier: the others have copied save_dir
        yield save_dir
        return
    scratch = temporary_worker_dir(strategy)
    try:
        if copy_run:
            _copy_run_files(pathlib.Path(save_dir), pathlib.Path(scratch))
            check_workers_agree(strategy, 0, "copying the run")
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_run_files(source: pathlib.Path, target: pathlib.Path) -> None:
    for name in RUN_FILES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, target / name)


def check_workers_agree(strategy: tf.distribute.Strategy, value: int, what: str) -> None:
    """Gather ``value`` from every worker (a collective: every worker must call it, and waits for the others);
    raise the same RuntimeError on all of them when the values differ.

    Raises
    ------
    RuntimeError
        The workers hold different values (naming ``what``, e.g. the epoch a resumed run starts from).
    """
    def replica_fn():  # the tensor is made on the replica's device (one made outside has none to gather from)
        return tf.distribute.get_replica_context().all_gather(tf.constant([int(value)], dtype=tf.int64), axis=0)

    gathered = tf.function(lambda: strategy.run(replica_fn))()
    values = [int(v) for v in strategy.experimental_local_results(gathered)[0].numpy()]
    if len(set(values)) > 1:
        raise RuntimeError(
            f"The workers disagree on {what}: {values} (one value per replica, the chief's first). Every worker "
            "must see the same save_dir: put it on a file system all workers share (docs/guides/scaling_out.md)."
        )


def shard_by_data(dataset):
    """``dataset`` with ``AutoShardPolicy.DATA``: under a multi-worker strategy each worker takes its share of the
    elements of every global batch (the file-based default does not apply to catalog pipelines). None stays None."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _one_replica(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return tf.distribute.get_strategy().experimental_local_results(value)[0]
    return value


class MultiWorkerModelMixin:
    """Make ``keras.Model.fit`` run under ``MultiWorkerMirroredStrategy`` (Keras 3.15, keras-team/keras#20585).

    Put it first in the bases of a ``keras.Model`` subclass. Outside a multi-worker strategy it changes nothing.
    """

    def _in_multi_worker(self) -> bool:
        return isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):  # Keras's private hook, see class docstring
        if self._in_multi_worker() and iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                batch = next(batches)
                with self.distribute_strategy.scope():
                    data_batch = tf.nest.map_structure(_one_replica, batch)
                break
            return super()._maybe_symbolic_build(data_batch=data_batch)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        return self._reduceable(super().train_step(data))

    def test_step(self, data):
        return self._reduceable(super().test_step(data))

    def _reduceable(self, logs):
        if not self._in_multi_worker():
            return logs
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if getattr(v, "shape", None) == () else v, logs)
