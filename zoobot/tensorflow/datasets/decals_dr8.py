"""A ready-made data module for GZ DESI / DECaLS DR8 vote counts: a worked example to copy and adjust.

:class:`DecalsDR8DataModule` is a :class:`~zoobot.tensorflow.datasets.GalaxyDataModule` whose label columns
are those of :data:`zoobot.shared.schemas.decals_dr8_ortho_schema` (34 vote-count columns such as
``smooth-or-featured-dr8_smooth``). The twin of :mod:`zoobot.pytorch.datasets.decals_dr8`. To make one
for another survey, copy this file and change the schema (and, if you like, the defaults).

Examples
--------
>>> from zoobot.tensorflow.datasets.decals_dr8 import DecalsDR8DataModule  # doctest: +SKIP
>>> datamodule = DecalsDR8DataModule(catalog=catalog, greyscale=True, batch_size=128)  # doctest: +SKIP
>>> datamodule.label_cols[0]  # doctest: +SKIP
'smooth-or-featured-dr8_smooth'
"""
from __future__ import annotations

from zoobot.shared import schemas
from zoobot.tensorflow.datasets.galaxy_datamodule import GalaxyDataModule

__all__ = ["DecalsDR8DataModule", "DR8_SCHEMA"]

#: The decision tree of the DR8 vote counts.
DR8_SCHEMA = schemas.decals_dr8_ortho_schema


class DecalsDR8DataModule(GalaxyDataModule):
    """``GalaxyDataModule`` preset with ``label_cols = decals_dr8_ortho_schema.label_cols``.

    Parameters
    ----------
    catalog, train_catalog, val_catalog, test_catalog, predict_catalog : DataFrame, optional
        As for :class:`~zoobot.tensorflow.datasets.GalaxyDataModule`; labelled catalogs need every DR8 label column.
    label_cols : list of str, optional
        Defaults to the 34 DR8 label columns.
    **datamodule_kwargs
        Any other :class:`~zoobot.tensorflow.datasets.GalaxyDataModule` argument (``greyscale``, ``batch_size``,
        ``resize_after_crop``, ``num_workers``...).
    """

    def __init__(self, catalog=None, train_catalog=None, val_catalog=None, test_catalog=None, predict_catalog=None,
                 label_cols=None, **datamodule_kwargs):
        super().__init__(
            label_cols=list(DR8_SCHEMA.label_cols) if label_cols is None else label_cols,
            catalog=catalog,
            train_catalog=train_catalog,
            val_catalog=val_catalog,
            test_catalog=test_catalog,
            predict_catalog=predict_catalog,
            **datamodule_kwargs,
        )
