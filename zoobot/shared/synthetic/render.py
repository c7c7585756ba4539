"""Draw a synthetic galaxy's latent parameters as a DECaLS-like colour cutout.

The steps (docs/api/shared/synthetic.md):

1. three single-channel maps on a pixel grid (cached per image size): **old** stars (bulge or
   elliptical, bar), **disk** (exponential disk with inter-arm depletion, outer rings, companions
   and tidal tails) and **young** stars (spiral arms with knots, inner rings). Arms, bar and rings
   are computed in disk-plane coordinates and then projected, so inclination foreshortens them;
2. the maps are mixed with per-component g, r, z colours (plus the galaxy's colour jitter);
3. one ``scipy.fft.rfft2`` convolves the three bands with a band-dependent Gaussian PSF;
4. the flux is scaled so that the mean S/N per pixel inside the half-light radius is
   ``10 ** log_snr``;
5. field stars and artifacts (saturated stars with diffraction spikes, satellite trails) are added;
6. Gaussian noise with variance ``sky**2 + flux / gain``;
7. a Lupton-style asinh stretch maps z, r, g to R, G, B uint8.

Everything stays float32 (NumPy 2 promotes float32 arrays with ``np.float64`` scalars, so scalars
are plain Python floats).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
from PIL import Image

from .latents import disk_axis_ratio

__all__ = ["render_galaxy", "render_flux", "galaxy_flux", "stretch_to_uint8", "inclination_fade"]

# g, r, z flux ratios of the three stellar populations
_OLD = (0.45, 1.0, 1.55)
_DISK = (0.75, 1.0, 1.2)
_YOUNG = (1.35, 1.0, 0.7)
_PSF_BAND = (1.15, 1.0, 0.9)  # sigma_g, sigma_r, sigma_z relative to the r band
_SKY = 1.0  # sky noise sigma: the unit of flux
_GAIN = 4.0  # flux units per "electron": source Poisson variance = flux / gain
# display: z, r, g weights before the stretch (soften the colours a little, like legacy-survey jpgs)
_DISPLAY = (0.75, 1.0, 1.35)
_STRETCH_SOFTENING = 3.0  # asinh softening, in sky sigmas
_STRETCH_MAX = 150.0  # flux (in sky sigmas) that maps to full brightness
_STRETCH_OFFSET = 0.015  # so that the sky is dark grey, not pure black


def inclination_fade(cos_i: float) -> float:
    """How visible face-on structure (arms, bar, rings) is at inclination ``cos_i``: 0 edge-on, 1 face-on."""
    return float(min(max((cos_i - 0.15) / 0.4, 0.0), 1.0))


@functools.lru_cache(maxsize=16)
def _grid(size: int):
    """Pixel coordinates (y, x) and the squared spatial frequencies of ``rfft2``, per image size."""
    coords = np.arange(size, dtype=np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    fy = scipy.fft.fftfreq(size).astype(np.float32)
    fx = scipy.fft.rfftfreq(size).astype(np.float32)
    f2 = (fy[:, None] ** 2 + fx[None, :] ** 2).astype(np.float32)
    for arr in (yy, xx, f2):
        arr.setflags(write=False)
    return yy, xx, f2


def _sersic(r: np.ndarray, re: float, n: float) -> np.ndarray:
    """Unnormalised Sersic profile (the ``exp(b_n)`` constant is dropped)."""
    bn = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    return np.exp(-bn * np.power(r * (1.0 / re), 1.0 / n))


def _normalised(m: np.ndarray, total: float) -> np.ndarray:
    s = float(m.sum())
    if s <= 0.0 or not math.isfinite(s):
        return np.zeros_like(m)
    if total / s > 1e30:  # a profile far below one pixel (tiny images): total / s would overflow float32
        return (m / np.float32(s)) * np.float32(total)
    return m * (total / s)


def _knots(rng: np.random.Generator, size: int, cell_px: float, clump: float) -> np.ndarray:
    """A gamma random field (star-forming knots), drawn coarse and upsampled with PIL."""
    n = int(min(max(round(size / max(cell_px, 1.2)), 4), size))
    coarse = rng.gamma(0.7, 1.0 / 0.7, size=(n, n)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    return (1.0 - clump) + clump * field


def _maps(lat: dict, size: int, rng: np.random.Generator):
    """The old, disk and young maps (each summing to its flux share) and the half-light mask.

    Over 80 lines on purpose: one rendering recipe, read top to bottom, whose components share the same
    rotated coordinates; splitting it would only pass those arrays around (and risk changing the images).
    """
    yy, xx, _ = _grid(size)
    s = float(size)
    cx = (size - 1) / 2.0 + lat["dx"] * s
    cy = (size - 1) / 2.0 + lat["dy"] * s
    X = xx - cx
    Y = yy - cy
    cpa, spa = math.cos(lat["pa"]), math.sin(lat["pa"])
    u = X * cpa + Y * spa  # along the major axis
    w = Y * cpa - X * spa  # along the minor axis
    re = max(lat["re"] * s, 0.5)

    old = np.zeros((size, size), np.float32)
    disk = np.zeros((size, size), np.float32)
    young = np.zeros((size, size), np.float32)
    bt = lat["bt"]

    # --- the bulge / elliptical (old stars), cusp softened by 0.5 px
    qb = lat["bulge_q"]
    wb = w * (1.0 / qb)
    if lat["boxy"]:
        au, aw = np.abs(u), np.abs(wb)
        rb = np.cbrt(au * au * au + aw * aw * aw)
        rb = np.sqrt(rb * rb + 0.25)
    else:
        rb = np.sqrt(u * u + wb * wb + 0.25)
    if bt > 0.0:
        old += _normalised(_sersic(rb, max(lat["bulge_re"] * s, 0.3), lat["bulge_n"]), bt)

    mask_q = lat["q"]
    if lat["host"] == "disk":
        cos_i = lat["cos_i"]
        qd = disk_axis_ratio(cos_i)
        mask_q = bt * qb + (1.0 - bt) * qd
        h = re / 1.678  # exponential scale length
        rd = np.sqrt(u * u + (w * (1.0 / qd)) ** 2)
        expdisk = np.exp(rd * (-1.0 / h))
        fade = inclination_fade(cos_i)
        # disk-plane coordinates for face-on structure
        yd = w * (1.0 / max(cos_i, 0.08))
        rp = np.sqrt(u * u + yd * yd) + 1e-3
        flux_disk = 1.0 - bt
        arms = lat["arms"]
        if arms is not None and fade > 0.0:
            a = arms["amp"] * fade
            theta = np.arctan2(yd, u)
            cot = 1.0 / math.tan(math.radians(arms["pitch_deg"]))
            phase = arms["m"] * (theta - cot * np.log(rp * (1.0 / h))) - arms["phase"]
            pattern = 0.5 * (1.0 + np.cos(phase))
            pattern *= pattern
            pattern *= pattern  # ((1 + cos)/2) ** 4
            envelope = expdisk * (1.0 - np.exp(-(rp * (1.0 / (0.7 * h))) ** 2))
            knots = _knots(rng, size, 0.35 * h, arms["clump"])
            young += _normalised(pattern * envelope * knots, 0.40 * a * flux_disk)
            expdisk = expdisk * (1.0 - 0.65 * a * (1.0 - pattern))
            flux_disk *= 1.0 - 0.40 * a
        bar = lat["bar"]
        if bar is not None and fade > 0.0:
            ca, sa = math.cos(bar["angle"]), math.sin(bar["angle"])
            length = bar["length"] * h
            xb = np.abs(u * ca + yd * sa) * (1.0 / length)
            yb = np.abs(yd * ca - u * sa) * (1.0 / (0.3 * length))
            rgen2 = np.cbrt(xb * xb * xb + yb * yb * yb) ** 2
            share = 0.5 * bar["strength"] * fade
            old += _normalised(np.exp(-rgen2), share * flux_disk)
            flux_disk *= 1.0 - share
        ring = lat["ring"]
        if ring is not None and ring["type"] == "inner" and fade > 0.0:
            radius = ring["radius"] * h
            annulus = np.exp(-0.5 * ((rp - radius) * (1.0 / (ring["width"] * radius))) ** 2)
            share = 0.6 * ring["strength"] * fade
            young += _normalised(annulus, 0.5 * share * (1.0 - bt))
            disk += _normalised(annulus, 0.5 * share * (1.0 - bt))
            flux_disk *= 1.0 - share
            # the disk inside the ring is depleted (its gas and stars went into the ring)
            expdisk = expdisk * (1.0 - 0.8 * ring["strength"] * fade * np.exp(-0.5 * (rp * (1.0 / (0.6 * radius))) ** 4))
        disk += _normalised(expdisk, flux_disk)
        if lat["dust"] > 0.0:
            sig = max(0.5, 0.35 * qd * h)
            lane = np.exp(-0.5 * ((w - 0.15 * sig) * (1.0 / sig)) ** 2) * np.exp(-((u * (1.0 / (3.0 * h))) ** 2))
            atten = 1.0 - lat["dust"] * lane
            disk *= atten
            young *= atten
            old *= 1.0 - 0.5 * lat["dust"] * lane
    else:
        ring = lat["ring"]
        if ring is not None:  # S0-like outer ring of an elliptical host
            rq = np.sqrt(u * u + (w * (1.0 / lat["q"])) ** 2)
            radius = ring["radius"] * re
            annulus = np.exp(-0.5 * ((rq - radius) * (1.0 / (ring["width"] * radius))) ** 2)
            disk += _normalised(annulus, 0.6 * ring["strength"])

    comp = lat["companion"]
    if comp is not None:
        ccx = comp["dist"] * s * math.cos(comp["angle"])
        ccy = comp["dist"] * s * math.sin(comp["angle"])
        cc, sc = math.cos(comp["pa"]), math.sin(comp["pa"])
        Xc, Yc = X - ccx, Y - ccy
        uc = Xc * cc + Yc * sc
        wc = (Yc * cc - Xc * sc) * (1.0 / comp["q"])
        blob = _sersic(np.sqrt(uc * uc + wc * wc + 0.25), max(comp["re"] * s, 0.4), comp["n"])
        old += _normalised(blob, 0.6 * comp["flux"])
        disk += _normalised(blob, 0.4 * comp["flux"])

    tail = lat["tail"]
    if tail is not None:
        rho = np.sqrt(X * X + Y * Y)
        phi = np.arctan2(Y, X)
        band = np.zeros_like(rho)
        for start in ((tail["angle"], tail["angle"] + math.pi) if tail["two_sided"] else (tail["angle"],)):
            t = np.mod(tail["direction"] * (phi - start), 2 * math.pi)
            r_t = tail["r0"] * s * np.exp(tail["growth"] * t)
            width = tail["width"] * s * (1.0 + 0.3 * t)
            window = np.clip(1.0 - t * (1.0 / tail["sweep"]), 0.0, 1.0)
            band += np.exp(-0.5 * ((rho - r_t) / width) ** 2) * window
        disk += _normalised(band, tail["flux"])
        young += _normalised(band, 0.3 * tail["flux"])

    mask_r2 = (u * u + (w * (1.0 / max(mask_q, 0.05))) ** 2) <= max(re, 1.0) ** 2
    return old, disk, young, mask_r2


def _gaussian_stamp(img: np.ndarray, x: float, y: float, peak: np.ndarray, sigmas: np.ndarray) -> None:
    """Add a Gaussian point source in a local stamp, in place.

    ``peak`` is the r-band-equivalent peak per band: each band's peak is scaled by
    ``(sigma_r / sigma_band) ** 2`` so that the band's total flux is ``peak * 2 pi sigma_r ** 2``
    (a broader PSF spreads the same flux; it does not add any).
    """
    size = img.shape[-1]
    rad = int(math.ceil(5.0 * float(sigmas.max()))) + 1
    x0, x1 = max(int(x) - rad, 0), min(int(x) + rad + 1, size)
    y0, y1 = max(int(y) - rad, 0), min(int(y) + rad + 1, size)
    if x0 >= x1 or y0 >= y1:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - y
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - x
    r2 = ys * ys + xs * xs
    sig_r = float(sigmas[1])
    for b in range(3):
        sig = float(sigmas[b])
        img[b, y0:y1, x0:x1] += float(peak[b]) * (sig_r / sig) ** 2 * np.exp(r2 * (-0.5 / sig ** 2))


def _add_artifact(img: np.ndarray, lat: dict, sigmas: np.ndarray) -> None:
    art = lat["artifact"]
    size = img.shape[-1]
    yy, xx, _ = _grid(size)
    if art["type"] == "star":
        x, y = art["x"] * size, art["y"] * size
        peak = art["flux"] * 10.0
        _gaussian_stamp(img, x, y, np.array([0.7, 1.0, 1.4]) * peak, sigmas * 1.6)
        # diffraction spikes along two perpendicular directions
        c, s_ = math.cos(art["spike_angle"]), math.sin(art["spike_angle"])
        X, Y = xx - x, yy - y
        a = X * c + Y * s_
        b = Y * c - X * s_
        sig = float(sigmas[1])
        length = 0.12 * size
        spikes = np.exp(-0.5 * (b / sig) ** 2 - np.abs(a) / length) + np.exp(-0.5 * (a / sig) ** 2 - np.abs(b) / length)
        img += (0.04 * peak) * spikes[None] * np.array([0.7, 1.0, 1.4], dtype=np.float32)[:, None, None]
        for ex, ey, eflux in art["extra"]:
            _gaussian_stamp(img, ex * size, ey * size, np.full(3, 10.0 * eflux, dtype=np.float32), sigmas)
    elif art["type"] == "trail":
        c, s_ = math.cos(art["angle"]), math.sin(art["angle"])
        X = xx - (size - 1) / 2.0
        Y = yy - (size - 1) / 2.0
        d = X * s_ - Y * c - art["offset"] * size
        sig = math.hypot(art["width"] * size, float(sigmas[1]))
        line = np.exp(-0.5 * (d * (1.0 / sig)) ** 2)
        for b, col in enumerate((0.72, 1.0, 1.36)):
            img[b] += (art["flux"] * col) * line


def _galaxy_light(latents: dict, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The galaxy's noise-free g, r, z light after the PSF, scaled to its S/N; and the PSF sigmas."""
    old, disk, young, mask = _maps(latents, size, rng)
    jitter = latents["colour"]
    img = np.empty((3, size, size), np.float32)
    for b in range(3):
        img[b] = (_OLD[b] * old + _DISK[b] * disk + _YOUNG[b] * young) * float(jitter[b])

    # PSF: one real FFT for the three bands
    _, _, f2 = _grid(size)
    sig_r = latents["psf"] * size
    sigmas = np.array([k * sig_r for k in _PSF_BAND], dtype=np.float32)
    spec = scipy.fft.rfft2(img, axes=(-2, -1), workers=1)
    transfer = np.exp((-2.0 * math.pi ** 2) * (sigmas ** 2)[:, None, None] * f2[None])
    img = scipy.fft.irfft2(spec * transfer, s=(size, size), axes=(-2, -1), workers=1).astype(np.float32, copy=False)

    # S/N normalisation: mean r-band S/N per pixel inside the half-light ellipse
    inside = img[1][mask]
    mean_inside = float(inside.mean()) if inside.size else float(img[1].max())
    if mean_inside > 0.0:
        img *= (10.0 ** latents["log_snr"]) * _SKY / mean_inside
    return img, sigmas


def galaxy_flux(latents: dict, image_size: int = 64) -> float:
    """Total noise-free r-band flux of the galaxy itself (no field stars, artifacts or noise), in sky sigmas.

    Knots are drawn with a fixed generator, so the value is a function of the latents alone; the
    ring set uses it to give non-rings the brightness of the rings they are matched to.

    Examples
    --------
    >>> import numpy as np
    >>> from zoobot.shared.synthetic import sample_latents
    >>> galaxy_flux(sample_latents(np.random.default_rng(0))) > 0
    True
    """
    img, _ = _galaxy_light(latents, int(image_size), np.random.default_rng(0))
    return float(img[1].sum(dtype=np.float64))


def render_flux(latents: dict, image_size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """The noisy g, r, z flux image in units of the sky noise sigma, shape (3, H, W) float32.

    Parameters
    ----------
    latents : dict
        From :func:`~zoobot.shared.synthetic.sample_latents`.
    image_size : int
        Side of the square image in pixels.
    rng : numpy.random.Generator, optional
        Draws the noise and the star-forming knots (a fresh unseeded generator if None).

    Returns
    -------
    ndarray of shape (3, image_size, image_size), float32
    """
    if rng is None:
        rng = np.random.default_rng()
    size = int(image_size)
    img, sigmas = _galaxy_light(latents, size, rng)

    for x, y, flux, colour in latents["stars"]:
        c = colour ** 0.5  # white-ish stars, from bluish to reddish
        peak = 10.0 * flux * np.array([0.74 / c, 1.0, 1.33 * c], dtype=np.float32)
        _gaussian_stamp(img, x * size, y * size, peak, sigmas)
    if latents["artifact"] is not None:
        _add_artifact(img, latents, sigmas)

    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= np.sqrt(_SKY * _SKY + np.maximum(img, 0.0) * (1.0 / _GAIN))
    img += noise
    return img


def stretch_to_uint8(flux: np.ndarray) -> np.ndarray:
    """Lupton-style asinh stretch of a (3, H, W) g, r, z flux image to an (H, W, 3) RGB uint8 image.

    Colour-preserving: every band is multiplied by ``asinh(I / a) / I`` of the mean intensity ``I``,
    so bright cores saturate towards white instead of changing hue. z -> R, r -> G, g -> B.
    """
    planes = (flux[2], flux[1], flux[0])  # z, r, g -> R, G, B
    intensity = planes[0] * (_DISPLAY[0] / 3.0) + planes[1] * (_DISPLAY[1] / 3.0) + planes[2] * (_DISPLAY[2] / 3.0)
    # asinh(I / a) / I is even in I, so |I| avoids the division by ~0 for sky pixels near zero
    intensity = np.maximum(np.abs(intensity), 1e-3)
    factor = np.arcsinh(intensity * (1.0 / _STRETCH_SOFTENING))
    factor *= (255.0 / math.asinh(_STRETCH_MAX / _STRETCH_SOFTENING))
    factor /= intensity
    out = np.empty((flux.shape[1], flux.shape[2], 3), np.uint8)
    for c in range(3):
        band = planes[c] * factor
        band *= _DISPLAY[c]
        band += 255.0 * _STRETCH_OFFSET + 0.5
        np.clip(band, 0.0, 255.0, out=band)
        out[..., c] = band
    return out


def render_galaxy(latents: dict, image_size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """Render one galaxy as a DECaLS-like RGB cutout.

    Parameters
    ----------
    latents : dict
        From :func:`~zoobot.shared.synthetic.sample_latents`.
    image_size : int
        Side of the square image in pixels (>= 8).
    rng : numpy.random.Generator, optional
        Draws the noise and star-forming knots; pass a seeded generator for reproducible pixels.

    Returns
    -------
    ndarray of shape (image_size, image_size, 3), uint8

    Raises
    ------
    ValueError
        If ``image_size`` is below 8.

    Examples
    --------
    >>> import numpy as np
    >>> from zoobot.shared.synthetic import sample_latents
    >>> rng = np.random.default_rng(0)
    >>> render_galaxy(sample_latents(rng), 32, rng).shape
    (32, 32, 3)
    """
    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size!r}.")
    return stretch_to_uint8(render_flux(latents, int(image_size), rng))
