"""Prediction over several machines: which galaxies each process predicts, and the merge of the parts.

A catalog too large for one machine is split into ``world_size`` disjoint parts by a stable hash of
``id_str`` (the same on every machine, Python version and run; not Python's salted ``hash()``)::

    part of a galaxy = int.from_bytes(blake2b(id_str.encode('utf-8'), digest_size=8).digest(), 'big') % world_size

Process ``rank`` predicts the rows of part ``rank`` with the ordinary chunked, resumable prediction
(:mod:`zoobot.shared.prediction_runner`) into its own file, ``<stem>.part-R-of-N<suffix>`` next to
``save_loc`` (and ``<stem>.part-R-of-N_failures.csv``). A killed process is simply run again: it
reuses its finished chunks. :func:`merge_parts`, runnable anywhere the files are, checks that every
part is there and finished, and writes ``save_loc``: one row per ``id_str``, exactly once, and one
failures file.

The rank and world size are given explicitly (``shard=(rank, world_size)`` or ``"R/N"``) or read from
the launcher's environment (torchrun, SLURM, ``TF_CONFIG``) with ``shard="auto"``
(:func:`shard_from_environment`). See docs/guides/scaling_out.md.

Examples
--------
>>> shard = parse_shard("1/3")
>>> shard
Shard(rank=1, world_size=3)
>>> part_path("preds.parquet", shard).as_posix()
'preds.part-1-of-3.parquet'
>>> assign_parts(["a", "b", "c", "d"], 3).tolist()
[2, 2, 0, 2]
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import re
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from zoobot.shared import save_predictions
from zoobot.shared.errors import format_examples

__all__ = [
    "Shard",
    "parse_shard",
    "shard_from_environment",
    "assign_parts",
    "select_part",
    "part_path",
    "find_parts",
    "merge_parts",
]

#: Metadata key of a part file: ``{"rank", "world_size", "catalog_rows"}``.
SHARD_KEY = "shard"
_PART = re.compile(r"^(?P<stem>.+)\.part-(?P<rank>\d+)-of-(?P<world>\d+)$")


class Shard(NamedTuple):
    """One process's part of a catalog: ``rank`` in ``0 .. world_size - 1``."""

    rank: int
    world_size: int


# ---------------------------------------------------------------------------------------------- which part

def parse_shard(shard, environ: Mapping[str, str] | None = None) -> Shard | None:
    """Read a ``shard`` argument: None, ``(rank, world_size)``, ``"R/N"`` or ``"auto"`` (the environment).

    Raises
    ------
    ValueError
        A malformed value, ``rank`` outside ``0 .. world_size - 1``, or ``"auto"`` with no launcher
        variables in the environment.

    Examples
    --------
    >>> parse_shard((0, 2))
    Shard(rank=0, world_size=2)
    >>> parse_shard("auto", environ={"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1",
    ...                              "SLURM_ARRAY_TASK_COUNT": "8"})
    Shard(rank=3, world_size=8)
    """
    if shard is None:
        return None
    if isinstance(shard, str):
        text = shard.strip().lower()
        if text == "auto":
            found = shard_from_environment(environ)
            if found is None:
                raise ValueError(
                    "shard='auto' found no rank and world size in the environment (RANK/WORLD_SIZE, "
                    "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, SLURM_PROCID/SLURM_NTASKS or TF_CONFIG). "
                    "Give them explicitly, e.g. shard=(0, 4) or --shard 0/4."
                )
            return found
        match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
        if match is None:
            raise ValueError(f"shard must look like 'R/N' (e.g. '0/4') or 'auto', got {shard!r}.")
        shard = (match.group(1), match.group(2))
    try:
        rank, world_size = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (rank, world_size), 'R/N' or 'auto', got {shard!r}.") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard rank must be in 0..world_size-1 with world_size >= 1, got rank {rank} of "
                         f"{world_size}.")
    return Shard(rank, world_size)


def shard_from_environment(environ: Mapping[str, str] | None = None) -> Shard | None:
    """The rank and world size a launcher set, or None.

    Looked up in this order: ``RANK``/``WORLD_SIZE`` (torchrun, Lightning, torch.distributed);
    ``LOCAL_RANK``/``WORLD_SIZE`` when on one node (``NODE_RANK``/``GROUP_RANK`` absent or 0);
    ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` (an array job: rank counted from
    ``SLURM_ARRAY_TASK_MIN``); ``SLURM_PROCID``/``SLURM_NTASKS``; ``TF_CONFIG`` (the chief first, then
    the workers in order).

    Examples
    --------
    >>> shard_from_environment({"RANK": "2", "WORLD_SIZE": "4"})
    Shard(rank=2, world_size=4)
    >>> tf_config = '{"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 1}}'
    >>> shard_from_environment({"TF_CONFIG": tf_config})
    Shard(rank=1, world_size=2)
    >>> shard_from_environment({}) is None
    True
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard((env["RANK"], env["WORLD_SIZE"]))
    one_node = env.get("NODE_RANK", env.get("GROUP_RANK", "0")) == "0"
    if "LOCAL_RANK" in env and "WORLD_SIZE" in env and one_node:
        return parse_shard((env["LOCAL_RANK"], env["WORLD_SIZE"]))
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return parse_shard((int(env["SLURM_ARRAY_TASK_ID"]) - first, env["SLURM_ARRAY_TASK_COUNT"]))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return parse_shard((env["SLURM_PROCID"], env["SLURM_NTASKS"]))
    if env.get("TF_CONFIG"):
        return _shard_from_tf_config(env["TF_CONFIG"])
    return None


def _shard_from_tf_config(text: str) -> Shard | None:
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster", {}), config.get("task", {})
        members = [(role, i) for role in ("chief", "worker") for i in range(len(cluster.get(role, [])))]
        me = (task.get("type"), int(task.get("index", 0)))
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not valid JSON of the form {{'cluster': ..., 'task': ...}}: {error}") from None
    if me not in members:
        return None  # e.g. an evaluator or parameter server: predicts nothing
    return Shard(members.index(me), len(members))


def assign_parts(id_str: Sequence, world_size: int) -> np.ndarray:
    """The part (0 .. world_size - 1) of each ``id_str``: a stable hash, the same on every machine.

    Examples
    --------
    >>> parts = assign_parts([str(i) for i in range(1000)], 4)
    >>> sorted(set(parts.tolist())), int(parts.min()), int(parts.max())
    ([0, 1, 2, 3], 0, 3)
    """
    world_size = int(world_size)
    digests = (hashlib.blake2b(str(i).encode("utf-8"), digest_size=8).digest() for i in id_str)
    return np.fromiter((int.from_bytes(d, "big") % world_size for d in digests), dtype=np.int64,
                       count=len(id_str))


def select_part(catalog: pd.DataFrame, shard: Shard) -> pd.DataFrame:
    """The rows of ``catalog`` in part ``shard.rank``, in catalog order (may be empty)."""
    return catalog[assign_parts(catalog["id_str"].tolist(), shard.world_size) == shard.rank]


def part_path(save_loc, shard: Shard) -> pathlib.Path:
    """Where part ``shard`` (a :class:`Shard` or ``(rank, world_size)``) of ``save_loc`` is written:
    ``<stem>.part-R-of-N<suffix>``."""
    shard = Shard(*shard)
    path = pathlib.Path(save_loc)
    return path.with_name(f"{path.stem}.part-{shard.rank}-of-{shard.world_size}{path.suffix}")


def part_metadata(metadata: Mapping | None, shard: Shard, catalog_rows: int) -> dict:
    """``metadata`` plus the part's record (rank, world size, rows of the whole catalog)."""
    record = dict(metadata or {})
    record[SHARD_KEY] = {"rank": shard.rank, "world_size": shard.world_size, "catalog_rows": int(catalog_rows)}
    return record


# ---------------------------------------------------------------------------------------------- merge

def find_parts(save_loc, world_size: int | None = None) -> list[pathlib.Path]:
    """The part files of ``save_loc`` (``world_size`` of them), found or expected, in rank order.

    Without ``world_size`` it is read from the names of the part files present.

    Raises
    ------
    FileNotFoundError
        No part file at all.
    ValueError
        Parts of several world sizes next to each other.
    """
    path = pathlib.Path(save_loc)
    if world_size is None:
        sizes = set()
        for candidate in path.parent.glob(f"{glob.escape(path.stem)}.part-*-of-*{path.suffix}"):
            match = _PART.match(candidate.name[: len(candidate.name) - len(path.suffix)])
            if match and match.group("stem") == path.stem:
                sizes.add(int(match.group("world")))
        if not sizes:
            raise FileNotFoundError(
                f"No part files {path.stem}.part-R-of-N{path.suffix} in {path.parent}/: run the prediction "
                f"with shard=(R, N) (zoobot predict --shard R/N) first."
            )
        if len(sizes) > 1:
            raise ValueError(
                f"Part files of {path.name} for several world sizes ({sorted(sizes)}) in {path.parent}/; give "
                f"the world size to merge (--world-size N) or remove the stale parts."
            )
        world_size = sizes.pop()
    return [part_path(path, Shard(rank, int(world_size))) for rank in range(int(world_size))]


def merge_parts(save_loc, world_size: int | None = None, *, catalog: pd.DataFrame | None = None) -> pathlib.Path:
    """Merge the part files of a sharded prediction into ``save_loc``, every ``id_str`` exactly once.

    Parameters
    ----------
    save_loc : str or path-like
        The file to write (``.parquet``, ``.csv``, ``.hdf5``); the parts are
        ``<stem>.part-R-of-N<suffix>`` next to it, their failures ``<stem>.part-R-of-N_failures.csv``.
    world_size : int, optional
        N; default: read from the part files' names.
    catalog : pandas.DataFrame, optional
        The catalog that was predicted: then its ``id_str`` must be exactly the merged ids. (Parquet and
        hdf5 parts record the catalog's length, so a lost row is caught without it; csv parts do not.)

    Returns
    -------
    pathlib.Path
        ``save_loc``. Rows are in rank order, each part in catalog order. Failures of every part are
        in ``<stem>_failures.csv``.

    Raises
    ------
    FileNotFoundError
        A part is missing (names the ranks to run).
    ValueError
        A part is unfinished (its ``.partial`` folder remains), was made for another rank or world
        size, holds ids of another part, ids overlap, parts disagree on outputs or samples, or the
        merged ids differ from ``catalog``'s.

    Examples
    --------
    >>> merge_parts('preds.parquet')  # doctest: +SKIP
    PosixPath('preds.parquet')
    """
    from zoobot.shared.load_predictions import load

    save_predictions.prediction_format(save_loc)  # E13
    paths = find_parts(save_loc, world_size)
    world_size = len(paths)
    _check_parts_finished(paths)
    parts = [load(path) for path in paths]  # (ids, predictions, label_cols, metadata)
    _check_parts_agree(paths, parts)
    for rank, (path, (ids, _, _, metadata)) in enumerate(zip(paths, parts)):
        _check_part_ids(path, rank, world_size, ids["id_str"].tolist(), metadata)
    merged_ids = pd.Index([i for ids, *_ in parts for i in ids["id_str"]])
    _check_coverage(merged_ids, parts, catalog)
    return _write_merged(save_loc, paths, parts, len(merged_ids))


def _check_parts_finished(paths) -> None:
    unfinished = [p for p in paths if save_predictions.partial_dir(p).exists()]
    missing = [p for p in paths if not p.exists() and p not in unfinished]
    if unfinished:
        raise ValueError(
            f"Cannot merge: part(s) {format_examples([p.name for p in unfinished])} are unfinished (their "
            f".partial folder remains: still running, or killed). Rerun them with the same arguments to finish."
        )
    if missing:
        ranks = [_rank_of(p) for p in missing]
        raise FileNotFoundError(
            f"Cannot merge: {len(missing)} of {len(paths)} parts missing "
            f"({format_examples([p.name for p in missing])}). Run (or rerun) the prediction with "
            f"--shard R/{len(paths)} for R in {format_examples(ranks)}."
        )


def _rank_of(path: pathlib.Path) -> int:
    return int(_PART.match(path.name[: len(path.name) - len(path.suffix)]).group("rank"))


def _check_parts_agree(paths, parts) -> None:
    _, first, first_cols, first_meta = parts[0]
    for path, (_, predictions, label_cols, metadata) in zip(paths[1:], parts[1:]):  # empty parts agree with any
        differences = [
            name for name, a, b in (
                ("label columns", label_cols, first_cols),
                ("samples per galaxy", predictions.shape[2], first.shape[2]),
                ("kind", metadata.get("kind"), first_meta.get("kind")),
                ("model_class", metadata.get("model_class"), first_meta.get("model_class")),
            ) if a != b
        ]
        if differences and len(predictions) and len(first):
            raise ValueError(f"Cannot merge: {path.name} differs from {paths[0].name} in "
                             f"{', '.join(differences)}; were they predicted with the same model and settings?")


def _check_part_ids(path, rank, world_size, ids, metadata) -> None:
    record = metadata.get(SHARD_KEY)
    if isinstance(record, Mapping) and (record.get("rank"), record.get("world_size")) != (rank, world_size):
        raise ValueError(f"Cannot merge: {path.name} records part {record.get('rank')} of "
                         f"{record.get('world_size')}, not {rank} of {world_size}.")
    wrong = np.flatnonzero(assign_parts(ids, world_size) != rank)
    if len(wrong):
        raise ValueError(
            f"Cannot merge: {path.name} holds {len(wrong)} id_str of other parts (e.g. "
            f"{format_examples([ids[i] for i in wrong[:3]])}); it was not written by shard {rank}/{world_size}."
        )


def _check_coverage(merged_ids: pd.Index, parts, catalog) -> None:
    duplicated = merged_ids[merged_ids.duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"Cannot merge: {len(duplicated)} id_str appear in more than one row, e.g. "
                         f"{format_examples(duplicated)}.")
    recorded = {m[SHARD_KEY].get("catalog_rows") for *_, m in parts if isinstance(m.get(SHARD_KEY), Mapping)}
    if len(recorded) > 1:
        raise ValueError(f"Cannot merge: the parts were predicted from catalogs of different lengths "
                         f"({sorted(recorded)} rows).")
    if recorded and recorded != {len(merged_ids)}:
        raise ValueError(f"Cannot merge: the parts hold {len(merged_ids)} rows but the catalog had "
                         f"{recorded.pop()}; a part is incomplete. Rerun its prediction.")
    if catalog is not None:
        expected = pd.Index(catalog["id_str"].astype(str))
        lost, extra = expected.difference(merged_ids), merged_ids.difference(expected)
        if len(lost) or len(extra):
            raise ValueError(f"Cannot merge: the parts miss {len(lost)} id_str of the catalog "
                             f"({format_examples(lost.tolist())}) and hold {len(extra)} not in it "
                             f"({format_examples(extra.tolist())}).")


def _write_merged(save_loc, paths, parts, n_rows) -> pathlib.Path:
    _, first, label_cols, metadata = max(parts, key=lambda part: len(part[1]))  # a part with rows
    metadata = {k: v for k, v in metadata.items() if k != SHARD_KEY}
    failures = [pd.read_csv(f, dtype={"id_str": str}) for f in map(save_predictions.failures_path, paths)
                if f.exists()]
    with save_predictions.PredictionWriter(save_loc, label_cols, n_rows, first.shape[2],
                                           metadata.get("kind", "tree"), metadata) as writer:
        for ids, predictions, *_ in parts:
            if len(ids):
                writer.write(predictions, ids["id_str"].tolist())
        return writer.close(pd.concat(failures, ignore_index=True) if failures else None)
