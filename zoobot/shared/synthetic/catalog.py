"""Synthetic galaxies with known truth: one at a time (:func:`synthetic_galaxy`) or as a catalog on disk
(:func:`make_synthetic_catalog`).

Galaxy ``index`` of a catalog is a pure function of ``(seed, prior, conditioning, index)``: its random
generators are ``numpy.random.default_rng([seed, split_id, index, stream])`` with one stream each for
the latent parameters, the pixels and the votes. So any galaxy can be regenerated on its own (lazy
datasets, data-loader workers, separate processes all agree), the votes do not depend on the image
size, and galaxy 17 is the same whether the catalog has 20 or 20,000 rows.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from zoobot.shared.errors import missing_dependency, unknown_option_error

from .answers import answer_probabilities, check_schema_supported, galaxy_features, _ring
from .latents import get_prior, prior_names, sample_latents
from .render import galaxy_flux, render_galaxy
from .votes import sample_votes

__all__ = ["GENERATOR_VERSION", "SyntheticGalaxy", "synthetic_galaxy", "make_synthetic_catalog"]

#: Frozen into every catalog so that benchmark numbers stay comparable; bump on any change that
#: alters pixels, latents, probabilities or votes for the same arguments. 2: non-rings of
#: conditioned ring sets are matched to the rings in size and brightness.
GENERATOR_VERSION = "zoobot-synthetic-2"

_PRIOR_IDS = {"train": 0, "shifted": 1}
_STREAM_LATENTS, _STREAM_PIXELS, _STREAM_VOTES = 0, 1, 2
_LABELS = ("votes", "ring")
_FORMATS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "fits": "fits"}
_MAX_CONDITIONING_DRAWS = 20000


def _default_schema():
    from zoobot.shared.schemas import decals_dr5_ortho_schema

    return decals_dr5_ortho_schema


def _rings_schema():
    from zoobot.shared.schemas import gz_rings_schema

    return gz_rings_schema


def _resolve_schema(schema, label: str):
    if label == "ring":
        if schema is not None:
            raise ValueError(
                "label='ring' draws the binary 'ring' label and its votes (gz_rings_schema); do not pass a schema "
                "with it. For vote counts of a decision tree use label='votes' and schema=..."
            )
        return _rings_schema()
    if schema is None:
        return _default_schema()
    if isinstance(schema, str):
        from zoobot.shared.schemas import get_schema

        return get_schema(schema)
    return schema


def _split_id(prior: str, ring_fraction) -> int:
    split = _PRIOR_IDS[prior]
    if ring_fraction is not None:  # conditioned draws are different galaxies: keep their streams apart
        split += 1000 * (1 + int(round(float(ring_fraction) * 1000)))
    return split


def _rng(seed: int, split_id: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(split_id), int(index), stream])


def _id_str(prior: str, seed: int, index: int, ring_fraction, split: str | None = None) -> str:
    """``synth-<prior>[-ringsNN]-s<seed>-<index>``; with ``split``, the split's name comes first
    (``synth-test-...``, ``synth-test-shifted-...``), so that test galaxies are not called ``synth-train``."""
    cond = "" if ring_fraction is None else f"-rings{int(round(float(ring_fraction) * 100)):02d}"
    word = prior if split is None else (split if prior == "train" else f"{split}-{prior}")
    return f"synth-{word}{cond}-s{int(seed)}-{int(index):06d}"


def _is_ring(latents: dict) -> bool:
    return _ring(galaxy_features(latents))["yes"] > 0.5


def _draw_latents(rng: np.random.Generator, prior: str, ring_fraction) -> dict:
    """Latents from the prior, or (with ``ring_fraction``) a ring with that probability, else its matched non-ring.

    A ring must be visible, so rings drawn from the prior are brighter and larger than average. A
    non-ring of a conditioned set is therefore drawn exactly like a ring, then loses its ring and gets
    the total light the ring galaxy had (``log_snr`` shifted): size, brightness, morphology and field
    stars follow the rings' distribution, and only the ring tells the classes apart (docs/guides/evaluating.md).
    """
    if ring_fraction is None:
        return sample_latents(rng, prior)
    want_ring = bool(rng.random() < float(ring_fraction))
    for _ in range(_MAX_CONDITIONING_DRAWS):
        latents = sample_latents(rng, prior)
        if _is_ring(latents):
            break
    else:
        raise RuntimeError(f"Could not draw a ring galaxy from prior {prior!r} in {_MAX_CONDITIONING_DRAWS} tries.")
    if not want_ring:
        ring_flux = galaxy_flux(latents)
        latents["ring"] = None
        latents["log_snr"] += math.log10(ring_flux / galaxy_flux(latents))
    return latents


@dataclasses.dataclass
class SyntheticGalaxy:
    """One synthetic galaxy with its truth.

    Attributes
    ----------
    id_str : str
    index : int
    image : ndarray (H, W, channels) uint8
    latents : dict
        The latent parameters (:func:`~zoobot.shared.synthetic.sample_latents`).
    label_cols : list of str
        The schema's label columns.
    probabilities : ndarray (n_answers,) float64
        True P(answer | question asked).
    counts : ndarray (n_answers,) int64
        Volunteer votes drawn down the tree.
    ring : int
        1 if the true probability of a visible ring exceeds 0.5, else 0.
    """

    id_str: str
    index: int
    image: np.ndarray
    latents: dict
    label_cols: list
    probabilities: np.ndarray
    counts: np.ndarray
    ring: int

    @property
    def kind(self) -> str:
        return self.latents["kind"]


def _make_galaxy(index, seed, image_size, schema, prior, ring_fraction, channels, split_name=None) -> SyntheticGalaxy:
    split = _split_id(prior, ring_fraction)
    latents = _draw_latents(_rng(seed, split, index, _STREAM_LATENTS), prior, ring_fraction)
    image = render_galaxy(latents, image_size, _rng(seed, split, index, _STREAM_PIXELS))
    if channels == 1:
        image = np.round(image.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    probs = answer_probabilities(latents, schema)
    counts = sample_votes(probs, schema, _rng(seed, split, index, _STREAM_VOTES))
    return SyntheticGalaxy(
        id_str=_id_str(prior, seed, index, ring_fraction, split_name), index=int(index), image=image, latents=latents,
        label_cols=list(schema.label_cols), probabilities=probs, counts=counts, ring=int(_is_ring(latents)),
    )


def _check_common(image_size, channels, label, prior, ring_fraction) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
    if channels not in (1, 3):
        raise unknown_option_error("number of channels", channels, ["1", "3"])
    if label not in _LABELS:
        raise unknown_option_error("synthetic label", label, list(_LABELS))
    get_prior(prior)
    if ring_fraction is not None and not 0.0 <= float(ring_fraction) <= 1.0:
        raise ValueError(f"ring_fraction must be None or in [0, 1], got {ring_fraction!r}.")


def synthetic_galaxy(index: int, seed: int = 0, image_size: int = 64, schema=None, prior: str = "train", *,
                     label: str = "votes", ring_fraction: float | None = None, channels: int = 3) -> SyntheticGalaxy:
    """Regenerate galaxy ``index`` exactly as :func:`make_synthetic_catalog` draws it.

    Parameters
    ----------
    index : int
        Row position in a catalog made with the same arguments.
    seed, image_size, schema, prior, label, ring_fraction, channels
        As in :func:`make_synthetic_catalog`.

    Returns
    -------
    SyntheticGalaxy

    Examples
    --------
    >>> g = synthetic_galaxy(3, image_size=32)
    >>> g.image.shape, g.id_str
    ((32, 32, 3), 'synth-train-s0-000003')
    """
    _check_common(image_size, channels, label, prior, ring_fraction)
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}.")
    schema = _resolve_schema(schema, label)
    return _make_galaxy(int(index), seed, image_size, schema, prior, ring_fraction, channels)


# ---------------------------------------------------------------------------------------------
# writing a catalog
# ---------------------------------------------------------------------------------------------

def _write_image(image: np.ndarray, path: Path, file_format: str) -> None:
    if file_format == "fits":
        try:
            from astropy.io import fits
        except ImportError as err:  # pragma: no cover - astropy is installed in development
            raise missing_dependency("astropy", "writing synthetic FITS images", "fits") from err
        data = np.moveaxis(image.astype(np.float32) / 255.0, -1, 0)
        if data.shape[0] == 1:
            data = data[0]
        hdu = fits.PrimaryHDU(data)
        hdu.header["BUNIT"] = ("display", "asinh-stretched display values in [0, 1]")
        hdu.header["GENERATR"] = GENERATOR_VERSION
        hdu.writeto(path, overwrite=True)
        return
    mode_image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if file_format == "jpg":
        mode_image.save(path, quality=92, subsampling=0)  # 4:4:4: keep the colour of small features
    else:
        mode_image.save(path)


_WORKER: dict = {}


def _init_worker(settings: dict) -> None:
    _WORKER.clear()
    _WORKER.update(settings)


def _render_chunk(indices) -> list:
    """Pool worker: render a chunk with the settings the pool initializer stored."""
    return _render_chunk_with(_WORKER, indices)


def _render_chunk_with(s: dict, indices) -> list:
    rows = []
    for index in indices:
        galaxy = _make_galaxy(index, s["seed"], s["image_size"], s["schema"], s["prior"], s["ring_fraction"],
                              s["channels"], s.get("split"))
        filename = f"{galaxy.id_str}.{s['ext']}"
        _write_image(galaxy.image, s["image_dir"] / filename, s["file_format"])
        rows.append((galaxy.id_str, filename, galaxy.kind, galaxy.ring, galaxy.counts, galaxy.probabilities))
    return rows


def make_synthetic_catalog(root, n_galaxies: int = 200, schema=None, image_size: int = 64, channels: int = 3,
                           label: str = "votes", seed: int = 0, file_format: str = "jpg", prior: str = "train",
                           n_workers: int = 1, progress: bool = True, *, ring_fraction: float | None = None,
                           split: str | None = None):
    """Write synthetic galaxy images and a Galaxy-Zoo-style catalog with known true answer probabilities.

    Images (``root/images/<id_str>.<ext>``) look like DECaLS colour cutouts; their morphology is drawn
    from latent parameters that also set the true answer probabilities, and volunteer votes are drawn
    down the decision tree (see ``zoobot.shared.synthetic``), so a model can learn them.

    Over 80 lines only for its numpydoc; the body is 47 lines.

    Parameters
    ----------
    root : str or Path
        Folder to write into (created if needed). The catalog is also saved as ``root/catalog.parquet``.
    n_galaxies : int
        Number of galaxies (rows).
    schema : Schema or str, optional
        Decision tree of the vote columns (a Schema, or a prebuilt schema name). Default
        ``decals_dr5_ortho_schema``. Any tree whose questions map onto the latent parameters works:
        GZ DECaLS DR5/DR8/DR12 (with or without campaign suffixes), GZ2, GZ Rings, CANDELS, Hubble,
        Cosmic Dawn, UKIDSS, JWST, Euclid, GZ Evo. Must be None when ``label='ring'``.
    image_size : int
        Side of the square images in pixels.
    channels : {3, 1}
        RGB, or greyscale (mean of R, G, B).
    label : {'votes', 'ring'}
        ``'votes'``: vote counts of ``schema`` (``label_cols = schema.label_cols``). ``'ring'``: a binary
        ``ring`` column (1 when the true probability of a visible ring exceeds 0.5) plus ``ring_yes`` /
        ``ring_no`` votes; ``label_cols = ['ring']``.
    seed : int
        Galaxy ``i`` is a function of (``seed``, ``prior``, ``ring_fraction``, ``i``) only.
    file_format : {'jpg', 'png', 'fits'}
        FITS files hold the same display image as float32 in [0, 1], shape (C, H, W) (2-D if greyscale).
    prior : {'train', 'shifted'}
        ``'shifted'`` draws smaller, fainter, blurrier galaxies with more mergers and artifacts.
    n_workers : int
        Processes rendering in parallel (fork pool where the platform has it); identical output.
    progress : bool
        Show a tqdm progress bar.
    ring_fraction : float, optional
        Condition every galaxy on being a ring (probability ``ring_fraction``) or not; None keeps the
        natural rate (about 4 %). ``demo_rings(synthetic=True)`` uses 0.5. Non-rings of such a set are
        ring galaxies with the ring taken away and the same total light, so they match the rings in
        size and brightness (a shortcut check: :func:`zoobot.shared.metrics.ring_baseline_auc`).
    split : str, optional
        Name of the split these galaxies are for (e.g. ``'test'``), used in ``id_str``
        (``synth-test-s7002-000000``) instead of the prior's name; pixels and votes do not depend on it.

    Returns
    -------
    catalog : pandas.DataFrame
        One row per galaxy: ``id_str``, ``file_loc`` (absolute), ``subfolder``, ``filename``, (``ring``),
        vote counts ``{label_col}`` (int), ``{label_col}_fraction`` (NaN where the question got no votes),
        ``{question}_total-votes``, ``{label_col}_true-prob``, ``kind``, ``prior``, ``generator_version``.
    label_cols : list of str

    Raises
    ------
    ValueError
        E13 for unknown ``label``, ``prior``, ``file_format`` or ``channels``; for bad sizes/counts; for a
        schema with questions the generator cannot answer (the message lists the supported ones).

    Examples
    --------
    >>> import tempfile
    >>> catalog, label_cols = make_synthetic_catalog(tempfile.mkdtemp(), n_galaxies=4, image_size=32, progress=False)
    >>> len(catalog), label_cols[0]
    (4, 'smooth-or-featured-dr5_smooth')
    """
    _check_common(image_size, channels, label, prior, ring_fraction)
    if not isinstance(n_galaxies, (int, np.integer)) or n_galaxies < 1:
        raise ValueError(f"n_galaxies must be a positive integer, got {n_galaxies!r}.")
    if str(file_format).lower() not in _FORMATS:
        raise unknown_option_error("image file format", file_format, ["jpg", "png", "fits"])
    if not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}.")
    file_format = _FORMATS[str(file_format).lower()]
    schema = _resolve_schema(schema, label)
    check_schema_supported(schema)
    if file_format == "fits":
        try:
            import astropy.io.fits  # noqa: F401
        except ImportError as err:  # pragma: no cover
            raise missing_dependency("astropy", "writing synthetic FITS images", "fits") from err

    root = Path(root).expanduser().resolve()
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(seed=int(seed), image_size=int(image_size), schema=schema, prior=prior,
                    ring_fraction=ring_fraction, channels=int(channels), image_dir=image_dir,
                    file_format=file_format, ext=file_format, split=None if split is None else str(split))

    from zoobot.shared.console import progress_bar

    chunk = 32
    chunks = [range(i, min(i + chunk, n_galaxies)) for i in range(0, n_galaxies, chunk)]
    rows: list = []
    bar = progress_bar(n_galaxies, desc="synthetic galaxies", unit="gal", disable=not progress)
    try:
        if n_workers == 1 or n_galaxies <= chunk:
            for c in chunks:
                rows.extend(_render_chunk_with(settings, c))
                bar.update(len(c))
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            with ctx.Pool(min(int(n_workers), len(chunks)), initializer=_init_worker, initargs=(settings,)) as pool:
                for result in pool.imap(_render_chunk, chunks):
                    rows.extend(result)
                    bar.update(len(result))
    finally:
        bar.close()

    catalog, label_cols = _assemble(rows, schema, label, prior, image_dir)
    catalog.to_parquet(root / "catalog.parquet", index=False)
    return catalog, label_cols


def _assemble(rows, schema, label, prior, image_dir: Path):
    ids = [r[0] for r in rows]
    filenames = [r[1] for r in rows]
    counts = np.stack([r[4] for r in rows]).astype(np.int64)
    probs = np.stack([r[5] for r in rows])
    cols: dict = {
        "id_str": ids,
        "file_loc": [str(image_dir / f) for f in filenames],
        "subfolder": image_dir.name,
        "filename": filenames,
    }
    if label == "ring":
        cols["ring"] = np.array([r[3] for r in rows], dtype=np.int64)
    label_names = list(schema.label_cols)
    for j, col in enumerate(label_names):
        cols[col] = counts[:, j]
    totals = {}
    for question in schema.questions:
        totals[question.text] = counts[:, question.start_index:question.end_index + 1].sum(axis=1)
    for question in schema.questions:
        total = totals[question.text]
        with np.errstate(invalid="ignore", divide="ignore"):
            for answer in question.answers:
                cols[f"{answer.text}_fraction"] = np.where(total > 0, counts[:, answer.index] / np.maximum(total, 1),
                                                           np.nan)
    for question in schema.questions:
        cols[f"{question.text}_total-votes"] = totals[question.text]
    for j, col in enumerate(label_names):
        cols[f"{col}_true-prob"] = probs[:, j]
    cols["kind"] = [r[2] for r in rows]
    cols["prior"] = prior
    cols["generator_version"] = GENERATOR_VERSION
    catalog = pd.DataFrame(cols)
    label_cols = ["ring"] if label == "ring" else label_names
    return catalog, label_cols

