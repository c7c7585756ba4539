"""Latent parameters of one synthetic galaxy: what it *is*, before anyone looks at it.

A galaxy is a plain ``dict`` of Python numbers (JSON-able), drawn by :func:`sample_latents`
from a named prior. Everything downstream is a deterministic function of these numbers
(plus, for the image, a random generator for the noise):

- :mod:`.render` turns them into an image;
- :mod:`.answers` turns them into the true answer probabilities of any supported decision tree;
- :mod:`.votes` draws volunteer votes from those probabilities down the tree.

Lengths are fractions of the image side (so one galaxy can be drawn at any size); angles are
radians unless the key says ``_deg``. The keys are listed in :func:`sample_latents`; the
populations in docs/api/shared/synthetic.md.
"""
from __future__ import annotations

import math

import numpy as np

from zoobot.shared.errors import unknown_option_error

__all__ = ["PRIORS", "sample_latents", "prior_names"]

#: Named priors. ``train`` is the design population; ``shifted`` is smaller, fainter,
#: blurrier and has more mergers and artifacts, for out-of-distribution checks.
PRIORS: dict[str, dict] = {
    "train": {
        "kind_probs": {"elliptical": 0.38, "disk": 0.52, "artifact": 0.03, "merger": 0.07},
        "re": (0.04, 0.12),
        "log_snr": (0.3, 1.9),
        "psf_px64": (0.6, 1.6),
        "n_stars_mean": 1.2,
        "minor_companion": 0.08,
    },
    "shifted": {
        "kind_probs": {"elliptical": 0.3378, "disk": 0.4622, "artifact": 0.05, "merger": 0.15},
        "re": (0.035, 0.10),
        "log_snr": (0.1, 1.6),
        "psf_px64": (0.9, 2.0),
        "n_stars_mean": 1.2,
        "minor_companion": 0.08,
    },
}

_KINDS = ("elliptical", "disk", "artifact", "merger")
_DISK_THICKNESS = 0.12  # intrinsic axis ratio of an edge-on disk


def prior_names() -> list[str]:
    """Names accepted by the ``prior`` arguments."""
    return list(PRIORS)


def get_prior(prior: str) -> dict:
    """Return the prior's settings, raising E13 for an unknown name."""
    if prior not in PRIORS:
        raise unknown_option_error("synthetic prior", prior, list(PRIORS))
    return PRIORS[prior]


def sample_latents(rng: np.random.Generator, prior: str = "train") -> dict:
    """Draw the latent parameters of one galaxy.

    Over 80 lines only for its numpydoc; the body is 39 lines.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same galaxy.
    prior : {'train', 'shifted'}
        Which population to draw from (see :data:`PRIORS`).

    Returns
    -------
    dict
        JSON-able latent parameters. Keys always present:

        - ``kind``: {'elliptical', 'disk', 'merger', 'artifact'}
        - ``host``: {'elliptical', 'disk'} (the morphology of the main galaxy; a merger or artifact has one too)
        - ``re``: half-light radius of the main galaxy (fraction of image side)
        - ``log_snr``: log10 of the mean signal-to-noise per pixel inside ``re``
        - ``psf``: Gaussian PSF sigma in the r band (fraction of image side)
        - ``dx``, ``dy``: centre offset (fraction of image side); ``pa``: position angle
        - ``colour``: three multiplicative jitters of the g, r, z fluxes
        - ``bt``, ``bulge_n``, ``bulge_re``, ``bulge_q``, ``boxy``: bulge-to-total ratio and the bulge's
          Sersic profile
        - ``q``: axis ratio of an elliptical (1 for disks)
        - ``cos_i``: cosine of the disk inclination (1 for ellipticals)
        - ``arms``, ``bar``, ``ring``, ``companion``, ``tail``, ``artifact``: ``None`` or a dict of that
          component's numbers
        - ``dust``: dust-lane optical depth (0 unless a disk is near edge-on)
        - ``merger_stage``: 0 none, 1 minor companion, 2 major companion + tidal tail, 3 merging nuclei + tail
        - ``stars``: list of field stars ``[x, y, flux, colour]``

    Raises
    ------
    ValueError
        E13 for an unknown ``prior``.

    Examples
    --------
    >>> import numpy as np
    >>> lat = sample_latents(np.random.default_rng(0))
    >>> lat['kind'] in ('elliptical', 'disk', 'artifact', 'merger')
    True
    """
    cfg = get_prior(prior)
    kind = _pick(rng, _KINDS, [cfg["kind_probs"][k] for k in _KINDS])

    lat: dict = {"kind": kind}
    lo, hi = cfg["re"]
    lat["re"] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    lat["log_snr"] = float(rng.uniform(*cfg["log_snr"]))
    lat["psf"] = float(rng.uniform(*cfg["psf_px64"]) / 64.0)
    lat["dx"], lat["dy"] = (float(v) for v in rng.normal(0.0, 0.01, size=2))
    lat["pa"] = float(rng.uniform(0.0, math.pi))
    lat["colour"] = [float(v) for v in rng.uniform(0.92, 1.08, size=3)]

    # the main galaxy: mergers have an elliptical or disk host; artifacts hide a galaxy too
    if kind in ("elliptical", "disk"):
        host = kind
    else:
        host = "elliptical" if rng.random() < 0.45 else "disk"
    lat["host"] = host
    _reset_components(lat)
    if host == "elliptical":
        _sample_elliptical(lat, rng)
    else:
        _sample_disk(lat, rng)

    if kind == "merger":
        _sample_merger(lat, rng)
    elif rng.random() < cfg["minor_companion"]:
        lat["merger_stage"] = 1
        lat["companion"] = _companion(rng, lat["re"], stage=1)
    if kind == "artifact":
        _sample_artifact(lat, rng)

    n_stars = int(rng.poisson(cfg["n_stars_mean"]))
    lat["stars"] = [
        [float(rng.uniform(0.03, 0.97)), float(rng.uniform(0.03, 0.97)),
         float(10 ** rng.uniform(-0.3, 1.3)), float(rng.uniform(0.8, 2.0))]
        for _ in range(n_stars)
    ]
    return lat


# ---------------------------------------------------------------------------------------------
# components
# ---------------------------------------------------------------------------------------------

def _reset_components(lat: dict) -> None:
    lat.update(
        bt=1.0, bulge_n=4.0, bulge_re=lat["re"], bulge_q=1.0, boxy=False, q=1.0, cos_i=1.0,
        arms=None, bar=None, ring=None, dust=0.0, companion=None, tail=None,
        merger_stage=0, artifact=None,
    )


def _sample_elliptical(lat: dict, rng: np.random.Generator) -> None:
    lat["bt"] = 1.0
    lat["bulge_n"] = float(rng.uniform(2.0, 6.0))
    lat["q"] = float(rng.uniform(0.35, 1.0))
    lat["bulge_q"] = lat["q"]
    lat["bulge_re"] = lat["re"]
    if rng.random() < 0.04:  # S0-like outer ring
        lat["ring"] = {
            "type": "outer",
            "radius": float(rng.uniform(1.5, 2.3)),  # in units of re
            "width": float(rng.uniform(0.10, 0.18)),  # fraction of the radius
            "strength": float(rng.uniform(0.35, 1.0)),
        }


def _sample_disk(lat: dict, rng: np.random.Generator) -> None:
    lat["bt"] = float(rng.beta(1.3, 3.0))
    lat["bulge_n"] = float(rng.uniform(1.0, 4.0))
    lat["bulge_re"] = float(lat["re"] * rng.uniform(0.18, 0.45))
    lat["bulge_q"] = float(rng.uniform(0.65, 1.0))
    lat["boxy"] = bool(rng.random() < 0.25)
    lat["cos_i"] = float(rng.uniform(0.0, 1.0))  # isotropic inclination
    if lat["cos_i"] < 0.3:
        lat["dust"] = float(rng.uniform(0.3, 0.8) * (1.0 - lat["cos_i"] / 0.3))
    if rng.random() < 0.70:
        m = _pick(rng, (1, 2, 3, 4, 5, 6), (0.10, 0.42, 0.22, 0.13, 0.08, 0.05))
        lat["arms"] = {
            "m": m,
            "pitch_deg": float(rng.uniform(7.0, 40.0)),
            "amp": float(rng.uniform(0.15, 1.0)),
            "clump": float(rng.uniform(0.0, 0.6)),
            "phase": float(rng.uniform(0.0, 2 * math.pi)),
        }
    if rng.random() < 0.40:
        lat["bar"] = {
            "strength": float(rng.uniform(0.1, 1.0)),
            "length": float(rng.uniform(0.5, 1.3)),  # in disk scale lengths
            "angle": float(rng.uniform(0.0, math.pi)),  # in the disk plane, from the major axis
        }
    if rng.random() < 0.10:
        bar_len = lat["bar"]["length"] if lat["bar"] else 1.0
        lat["ring"] = {
            "type": "inner",
            "radius": float(max(bar_len, 1.0) * rng.uniform(1.8, 2.6)),  # in disk scale lengths
            "width": float(rng.uniform(0.08, 0.14)),
            "strength": float(rng.uniform(0.35, 1.0)),
        }


def _companion(rng: np.random.Generator, re: float, stage: int) -> dict:
    if stage == 1:
        dist, flux, size = rng.uniform(2.0, 4.0), rng.uniform(0.04, 0.15), rng.uniform(0.25, 0.45)
    elif stage == 2:
        dist, flux, size = rng.uniform(1.5, 3.0), rng.uniform(0.3, 0.9), rng.uniform(0.5, 0.9)
    else:
        dist, flux, size = rng.uniform(0.35, 1.0), rng.uniform(0.4, 1.0), rng.uniform(0.5, 0.9)
    return {
        "dist": float(dist * re), "angle": float(rng.uniform(0, 2 * math.pi)),
        "flux": float(flux), "re": float(size * re), "n": float(rng.uniform(1.0, 4.0)),
        "q": float(rng.uniform(0.5, 1.0)), "pa": float(rng.uniform(0, math.pi)),
    }


def _sample_merger(lat: dict, rng: np.random.Generator) -> None:
    stage = _pick(rng, (1, 2, 3), (0.3, 0.4, 0.3))
    lat["merger_stage"] = stage
    lat["companion"] = _companion(rng, lat["re"], stage)
    if stage >= 2:
        lat["tail"] = {
            "angle": float(rng.uniform(0, 2 * math.pi)),
            "sweep": float(rng.uniform(2.0, 3.6)),  # radians along the arc
            "r0": float(rng.uniform(0.8, 1.4) * lat["re"]),
            "growth": float(rng.uniform(0.25, 0.5)),  # log-spiral growth per radian
            "width": float(rng.uniform(0.25, 0.45) * lat["re"]),
            "flux": float(rng.uniform(0.08, 0.25)),
            "direction": 1.0 if rng.random() < 0.5 else -1.0,
            "two_sided": bool(stage == 3 and rng.random() < 0.6),
        }


def _sample_artifact(lat: dict, rng: np.random.Generator) -> None:
    kind = _pick(rng, ("star", "trail", "empty"), (0.4, 0.35, 0.25))
    art: dict = {"type": kind}
    if kind == "star":
        art.update(
            x=float(0.5 + rng.normal(0, 0.08)), y=float(0.5 + rng.normal(0, 0.08)),
            flux=float(rng.uniform(40.0, 150.0)), spike_angle=float(rng.uniform(0, math.pi / 2)),
            extra=[[float(v) for v in rng.uniform(0.15, 0.85, size=2)] + [float(rng.uniform(3.0, 20.0))]
                   for _ in range(int(rng.integers(0, 4)))],  # a small cluster of bright stars
        )
    elif kind == "trail":
        art.update(
            angle=float(rng.uniform(0, math.pi)), offset=float(rng.normal(0, 0.08)),
            flux=float(rng.uniform(3.0, 10.0)), width=float(rng.uniform(0.6, 1.4) / 64),
        )
    else:  # an almost empty frame: the galaxy is tiny and very faint
        lat["log_snr"] = float(lat["log_snr"] - rng.uniform(0.9, 1.4))
        lat["re"] = float(lat["re"] * rng.uniform(0.4, 0.7))
        lat["bulge_re"] = float(min(lat["bulge_re"], lat["re"]))
    lat["artifact"] = art


def _pick(rng: np.random.Generator, values, probs):
    """One of ``values`` with probabilities ``probs`` (normalised here); much faster than ``rng.choice``."""
    u = rng.random() * sum(probs)
    cumulative = 0.0
    for value, p in zip(values, probs):
        cumulative += p
        if u < cumulative:
            return value
    return values[-1]


def disk_axis_ratio(cos_i: float) -> float:
    """Projected axis ratio of a disk of intrinsic thickness 0.12 seen at inclination ``cos_i``."""
    return math.sqrt(cos_i ** 2 + _DISK_THICKNESS ** 2 * (1.0 - cos_i ** 2))
