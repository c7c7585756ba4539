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
import shutil
import tempfile

import tensorflow as tf

__all__ = ["cluster_resolver", "is_chief", "MultiWorkerModelMixin", "multi_worker_strategy", "worker_save_dir",
           "worker_count"]


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
    """A ``MultiWorkerMirroredStrategy`` over the cluster of :func:`cluster_resolver`."""
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver(nodes))


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


@contextlib.contextmanager
def worker_save_dir(save_dir, strategy: tf.distribute.Strategy):
    """Yield ``save_dir`` on the chief, a temporary folder (removed afterwards) on the other workers.

    Every worker must save (saving runs collective operations), but only the chief's files are kept.
    """
    if is_chief(strategy):
        yield save_dir
        return
    scratch = tempfile.mkdtemp(prefix=f"zoobot-worker{strategy.cluster_resolver.task_id}-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
