"""True answer probabilities of a synthetic galaxy, for any decision tree whose questions we know.

Each supported question (its name without the campaign suffix, e.g. ``bar`` for ``bar-dr5``)
has *canonical* answers computed from the latent parameters (docs/api/shared/synthetic.md):
smooth functions of the morphology and of a **visibility** term
``v = sigmoid(3.5 (log_snr - 0.8)) * re / (re + 2 psf)``, so faint or small galaxies get more
"smooth", "cant-tell" and "no bar" answers, like the redshift bias of real Galaxy Zoo votes.
Ordinal questions use soft logistic cut-points, so volunteers disagree realistically.

A tree's own answers are then mapped onto the canonical ones (``bar_yes`` = strong + weak bar;
GZ2's ``bulge-size_obvious`` = moderate + large; ...). Canonical answers a tree does not offer are
dropped and the rest renormalised. Every question's probabilities sum to 1, with a floor of
:data:`PROBABILITY_FLOOR` so losses never see log(0).
"""
from __future__ import annotations

import math
import re

import numpy as np

from .latents import disk_axis_ratio
from .render import inclination_fade

__all__ = [
    "PROBABILITY_FLOOR",
    "answer_probabilities",
    "base_question",
    "supported_questions",
    "galaxy_features",
]

PROBABILITY_FLOOR = 0.005

_CAMPAIGN_SUFFIX = re.compile(r"-[a-z0-9]+$")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _ordinal(x: float, cuts, scale: float) -> list:
    """P(level k) for k = 0..len(cuts) with logistic cut-points: P(level >= k) = sigmoid((x - cut_k) / scale)."""
    above = [1.0] + [_sigmoid((x - c) / scale) for c in cuts] + [0.0]
    return [max(above[k] - above[k + 1], 0.0) for k in range(len(cuts) + 1)]


# ---------------------------------------------------------------------------------------------
# derived quantities shared by the questions
# ---------------------------------------------------------------------------------------------

def galaxy_features(lat: dict) -> dict:
    """What a volunteer can see: visibility-weighted strengths of each morphological feature."""
    v = _sigmoid(3.5 * (lat["log_snr"] - 0.8)) * lat["re"] / (lat["re"] + 2.0 * lat["psf"])
    is_disk = lat["host"] == "disk"
    cos_i = lat["cos_i"] if is_disk else 1.0
    fade = inclination_fade(cos_i) if is_disk else 0.0
    arms = lat["arms"] if is_disk else None
    bar = lat["bar"] if is_disk else None
    ring = lat["ring"]
    arm_vis = arms["amp"] * fade * v if arms else 0.0
    bar_vis = bar["strength"] * fade * v if bar else 0.0
    if ring is None:
        ring_vis = 0.0
    else:
        ring_fade = fade if ring["type"] == "inner" else min(1.0, 0.3 + lat["q"])
        ring_vis = ring["strength"] * ring_fade * v
    q_proj = lat["q"]
    if is_disk:
        q_proj = lat["bt"] * lat["bulge_q"] + (1.0 - lat["bt"]) * disk_axis_ratio(cos_i)
    edge_on = _sigmoid(14.0 * (0.28 - cos_i)) if is_disk else 0.0
    artifact = lat["artifact"]["type"] if lat["artifact"] else None
    return {
        "v": v, "is_disk": is_disk, "cos_i": cos_i, "fade": fade, "bt": lat["bt"], "q_proj": q_proj,
        "edge_on": edge_on, "arms": arms, "arm_vis": arm_vis, "bar_vis": bar_vis, "ring_vis": ring_vis,
        "boxy": lat["boxy"], "stage": lat["merger_stage"], "artifact": artifact,
        "clump_vis": (arms["clump"] * arms["amp"] * fade * v) if arms else 0.0,
        "small": lat["re"] / (lat["re"] + 2.0 * lat["psf"]),
    }


# ---------------------------------------------------------------------------------------------
# canonical answers per question
# ---------------------------------------------------------------------------------------------

def _smooth_or_featured(f: dict) -> dict:
    p_art = {"star": 0.80, "trail": 0.70, "empty": 0.55}.get(f["artifact"], 0.012)
    if f["is_disk"]:
        score = (
            0.30 * (1.0 - f["bt"]) + 1.1 * f["arm_vis"] + 0.8 * f["bar_vis"]
            + 0.9 * f["edge_on"] * (1.0 - f["bt"]) * f["v"] ** 0.5 + 0.8 * f["ring_vis"]
        )
    else:
        score = 0.02 + 0.9 * f["ring_vis"]
    score += 0.22 * f["stage"] * f["v"] ** 0.5
    p_feat = _sigmoid(7.0 * (score * f["v"] ** 0.3 - 0.23))
    return {"smooth": (1 - p_art) * (1 - p_feat), "featured": (1 - p_art) * p_feat, "artifact": p_art}


def _disk_edge_on(f: dict) -> dict:
    if f["is_disk"]:
        yes = 0.03 + 0.94 * f["edge_on"] * (0.6 + 0.4 * f["small"])
    else:
        yes = 0.25 * _sigmoid((0.45 - f["q_proj"]) / 0.06)
    return {"yes": yes, "no": 1 - yes}


def _has_spiral_arms(f: dict) -> dict:
    yes = _sigmoid(9.0 * (f["arm_vis"] - 0.16))
    if f["stage"] >= 2:
        yes = max(yes, 0.25)  # tidal tails look like arms to some volunteers
    return {"yes": yes, "no": 1 - yes}


def _bar(f: dict) -> dict:
    no, weak, strong = _ordinal(f["bar_vis"], (0.13, 0.40), 0.06)
    return {"strong": strong, "weak": weak, "no": no}


def _bulge_size(f: dict) -> dict:
    scale = 0.035 + 0.05 * (1.0 - f["v"])
    bt = f["bt"] if f["is_disk"] else 0.5  # an elliptical called "featured": its bulge is large or dominant
    levels = _ordinal(bt, (0.05, 0.14, 0.28, 0.50), scale)
    return dict(zip(("none", "small", "moderate", "large", "dominant"), levels))


def _how_rounded(f: dict) -> dict:
    cigar, between, round_ = _ordinal(f["q_proj"], (0.42, 0.72), 0.06)
    return {"round": round_, "in-between": between, "cigar": cigar}


def _edge_on_bulge(f: dict) -> dict:
    p_none = _sigmoid((0.10 - f["bt"]) / 0.04)
    p_boxy = 0.75 if f["boxy"] else 0.12
    return {"boxy": (1 - p_none) * p_boxy, "none": p_none, "rounded": (1 - p_none) * (1 - p_boxy)}


def _spiral_winding(f: dict) -> dict:
    pitch = f["arms"]["pitch_deg"] if f["arms"] else 22.0
    scale = 3.0 + 8.0 * (1.0 - f["v"])
    tight, medium, loose = _ordinal(pitch, (15.0, 25.0), scale)
    return {"tight": tight, "medium": medium, "loose": loose}


def _spiral_arm_count(f: dict) -> dict:
    arms = f["arms"]
    if arms is None:
        base = {"1": 0.15, "2": 0.3, "3": 0.15, "4": 0.05, "more-than-4": 0.05}
        cant = 0.35
    else:
        clarity = min(1.0, arms["amp"] * f["fade"] * f["v"] * 3.0)
        width = 0.35 + 1.4 * (1.0 - clarity)
        dens = [math.exp(-0.5 * ((k - arms["m"]) / width) ** 2) for k in (1, 2, 3, 4)]
        dens.append(sum(math.exp(-0.5 * ((k - arms["m"]) / width) ** 2) for k in (5, 6, 7, 8)))
        dens[1] *= 1.25  # volunteers favour "2"
        total = sum(dens)
        base = dict(zip(("1", "2", "3", "4", "more-than-4"), (d / total for d in dens)))
        cant = 0.05 + 0.4 * (1.0 - clarity) ** 2
    out = {k: (1 - cant) * p for k, p in base.items()}
    out["cant-tell"] = cant
    return out


def _merging(f: dict) -> dict:
    if f["artifact"] is not None and f["stage"] == 0:
        stage = 0.0
    else:
        stage = float(f["stage"]) * (0.5 + 0.5 * f["v"] ** 0.5)
    none, minor, major, merger = _ordinal(stage, (0.6, 1.55, 2.5), 0.2 + 0.15 * (1.0 - f["v"]))
    return {"none": none, "minor": minor, "major": major, "merger": merger}


def _something_odd(f: dict) -> dict:
    p_ring = _sigmoid(12.0 * (f["ring_vis"] - 0.20))
    p_merge = 1.0 - _merging(f)["none"]
    p_art = 0.5 if f["artifact"] else 0.0
    yes = 1.0 - (1 - 0.03) * (1 - p_ring) * (1 - 0.8 * p_merge) * (1 - p_art)
    return {"yes": yes, "no": 1 - yes}


def _ring(f: dict) -> dict:
    yes = _sigmoid(12.0 * (f["ring_vis"] - 0.20))
    return {"yes": yes, "no": 1 - yes}


def _clumps(f: dict) -> dict:
    yes = _sigmoid(10.0 * (f["clump_vis"] - 0.12))
    if f["stage"] == 3:
        yes = max(yes, 0.4)
    return {"yes": yes, "no": 1 - yes}


def _galaxy_symmetrical(f: dict) -> dict:
    asym = 0.25 * f["stage"] + (0.3 if f["arms"] and f["arms"]["m"] == 1 else 0.0)
    yes = _sigmoid(4.0 * (0.45 - asym))
    return {"yes": yes, "no": 1 - yes}


def _clumps_embedded(f: dict) -> dict:
    yes = 0.85 if f["is_disk"] else 0.35
    return {"yes": yes, "no": 1 - yes}


def _problem(f: dict) -> dict:
    table = {
        "star": {"star": 0.8, "artifact": 0.15, "zoom": 0.05},
        "trail": {"star": 0.05, "artifact": 0.85, "zoom": 0.10},
        "empty": {"star": 0.1, "artifact": 0.2, "zoom": 0.7},
    }
    if f["artifact"] in table:
        return table[f["artifact"]]
    zoom = 0.2 + 0.6 * (1.0 - f["small"])
    return {"star": (1 - zoom) * 0.5, "artifact": (1 - zoom) * 0.5, "zoom": zoom}


def _artifact(f: dict) -> dict:
    table = {
        "star": {"diffraction": 0.35, "saturation": 0.35, "scattered": 0.15, "ghost": 0.05, "other": 0.10},
        "trail": {"satellite": 0.8, "ray": 0.1, "other": 0.1},
        "empty": {"other": 0.6, "scattered": 0.2, "ray": 0.1, "ghost": 0.1},
    }
    base = {k: 0.0 for k in ("satellite", "scattered", "diffraction", "ray", "saturation", "other", "ghost")}
    base.update(table.get(f["artifact"], {"other": 0.7, "ray": 0.15, "scattered": 0.15}))
    return base


_CANONICAL = {
    "smooth-or-featured": _smooth_or_featured,
    "disk-edge-on": _disk_edge_on,
    "has-spiral-arms": _has_spiral_arms,
    "bar": _bar,
    "bulge-size": _bulge_size,
    "how-rounded": _how_rounded,
    "edge-on-bulge": _edge_on_bulge,
    "bulge-shape": _edge_on_bulge,
    "spiral-winding": _spiral_winding,
    "spiral-arm-count": _spiral_arm_count,
    "merging": _merging,
    "something-odd": _something_odd,
    "ring": _ring,
    "clumps": _clumps,
    "clumpy-appearance": _clumps,
    "galaxy-symmetrical": _galaxy_symmetrical,
    "clumps-embedded-larger-object": _clumps_embedded,
    "problem": _problem,
    "artifact": _artifact,
}


# ---------------------------------------------------------------------------------------------
# each tree's answers -> canonical answers: {answer suffix: {canonical answer: weight}}
# ---------------------------------------------------------------------------------------------

def _same(*names):
    return {"_" + n: {n: 1.0} for n in names}


_YES_NO = _same("yes", "no")
_ARM_COUNT = {**_same("1", "2", "3", "4", "more-than-4", "cant-tell")}
_VARIANTS: dict[str, list[dict]] = {
    "smooth-or-featured": [
        {"_smooth": {"smooth": 1.0}, featured: {"featured": 1.0}, odd: {"artifact": 1.0}}
        for featured in ("_featured-or-disk", "_features")
        for odd in ("_artifact", "_problem", "_star-artifact-zoom")
    ] + [{"_smooth": {"smooth": 1.0}, "_featured-or-disk": {"featured": 1.0}}],
    "disk-edge-on": [_YES_NO],
    "has-spiral-arms": [_YES_NO],
    "bar": [_same("strong", "weak", "no"), {"_yes": {"strong": 1.0, "weak": 1.0}, "_no": {"no": 1.0}}],
    "bulge-size": [
        _same("dominant", "large", "moderate", "small", "none"),
        {"_dominant": {"dominant": 1.0}, "_obvious": {"large": 1.0, "moderate": 1.0},
         "_just-noticeable": {"small": 1.0}, "_no": {"none": 1.0}},
        {"_dominant": {"dominant": 1.0}, "_obvious": {"large": 1.0, "moderate": 1.0},
         "_just-noticeable": {"small": 1.0}, "_none": {"none": 1.0}},
        {"_dominant": {"dominant": 1.0}, "_obvious": {"large": 1.0, "moderate": 1.0, "small": 1.0},
         "_none": {"none": 1.0}},
    ],
    "how-rounded": [
        {r: {"round": 1.0}, "_in-between": {"in-between": 1.0}, c: {"cigar": 1.0}}
        for r in ("_round", "_completely") for c in ("_cigar", "_cigar-shaped")
    ],
    "edge-on-bulge": [
        _same("boxy", "none", "rounded"),
        {"_yes": {"boxy": 1.0, "rounded": 1.0}, "_no": {"none": 1.0}},
    ],
    "bulge-shape": [
        {"_round": {"rounded": 1.0}, "_boxy": {"boxy": 1.0}, "_no-bulge": {"none": 1.0}},
        _same("rounded", "boxy", "none"),
    ],
    "spiral-winding": [_same("tight", "medium", "loose")],
    "spiral-arm-count": [
        _ARM_COUNT,
        {**_same("1", "2", "3", "4", "cant-tell"), "_5-plus": {"more-than-4": 1.0}},
        _same("1", "2", "3", "4", "more-than-4"),
    ],
    "merging": [
        {"_none": {"none": 1.0}, "_minor-disturbance": {"minor": 1.0},
         "_major-disturbance": {"major": 1.0}, "_merger": {"merger": 1.0}},
        {"_neither": {"none": 1.0, "minor": 0.5}, "_tidal-debris": {"minor": 0.5, "major": 0.6},
         "_both": {"major": 0.4, "merger": 0.6}, "_merger": {"merger": 0.4}},
    ],
    "something-odd": [_YES_NO],
    "ring": [_YES_NO],
    "clumps": [_YES_NO],
    "clumpy-appearance": [_YES_NO],
    "galaxy-symmetrical": [_YES_NO],
    "clumps-embedded-larger-object": [_YES_NO],
    "problem": [_same("star", "artifact", "zoom"), {**_same("star", "artifact"), "_bad-zoom": {"zoom": 1.0}}],
    "artifact": [
        _same("satellite", "scattered", "diffraction", "ray", "saturation", "other"),
        _same("satellite", "scattered", "diffraction", "ray", "saturation", "other", "ghost"),
    ],
}


def supported_questions() -> list[str]:
    """Question names (without campaign suffix) the generator can answer."""
    return list(_CANONICAL)


def base_question(question: str) -> str | None:
    """The supported question behind ``question``: itself, or itself minus a campaign suffix
    (``'bar-dr5'`` -> ``'bar'``); ``None`` if neither is supported."""
    if question in _CANONICAL:
        return question
    stripped = _CAMPAIGN_SUFFIX.sub("", question)
    return stripped if stripped in _CANONICAL else None


_PLANS: dict = {}


def _question_plan(schema) -> tuple:
    """Per question: (text, canonical function, start index, canonical keys, weights [n_answers, n_keys]).

    Cached per schema object (by identity: hashing a Schema walks all its questions, which would cost
    more than the probabilities themselves).
    """
    cached = _PLANS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    plan = _build_question_plan(schema)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[id(schema)] = (schema, plan)
    return plan


def _build_question_plan(schema) -> tuple:
    plan = []
    unknown = []
    for question in schema.questions:
        base = base_question(question.text)
        if base is None:
            unknown.append(question.text)
            continue
        suffixes = [a.text[len(question.text):] for a in question.answers]
        variant = next((v for v in _VARIANTS[base] if set(v) == set(suffixes)), None)
        if variant is None:
            accepted = ["(" + ", ".join(v) + ")" for v in _VARIANTS[base]]
            raise ValueError(
                f"The synthetic generator knows question {question.text!r} (as {base!r}) but not its answers "
                f"{suffixes}. Supported answer sets: {'; '.join(accepted)}."
            )
        keys = sorted({c for s in suffixes for c in variant[s]})
        weights = np.array([[variant[s].get(k, 0.0) for k in keys] for s in suffixes])
        plan.append((question.text, _CANONICAL[base], question.start_index, keys, weights))
    if unknown:
        raise ValueError(
            f"The synthetic generator cannot answer question(s) {unknown} of {_schema_name(schema)}: they do not "
            f"map onto its latent parameters. Supported questions (with or without a campaign suffix such as "
            f"'-dr5'): {', '.join(supported_questions())}."
        )
    return tuple(plan)


def _schema_name(schema) -> str:
    return f"schema {schema.name!r}" if getattr(schema, "name", None) else "this schema"


def check_schema_supported(schema) -> None:
    """Raise ValueError (listing the supported questions) if the generator cannot answer ``schema``."""
    _question_plan(schema)


def answer_probabilities(latents: dict, schema) -> np.ndarray:
    """True answer probabilities of one galaxy for every answer of ``schema``.

    Parameters
    ----------
    latents : dict
        From :func:`~zoobot.shared.synthetic.sample_latents`.
    schema : zoobot.shared.schemas.Schema
        Any tree whose questions are in :func:`supported_questions` (campaign suffixes allowed).

    Returns
    -------
    ndarray of shape (schema.n_answers,), float64
        Aligned with ``schema.label_cols``; each question's answers sum to 1 and are at least
        :data:`PROBABILITY_FLOOR`. These are P(answer | question asked).

    Raises
    ------
    ValueError
        If a question (or its answer set) is not supported; the message lists the supported ones.

    Examples
    --------
    >>> import numpy as np
    >>> from zoobot.shared.schemas import gz_rings_schema
    >>> from zoobot.shared.synthetic import sample_latents
    >>> p = answer_probabilities(sample_latents(np.random.default_rng(0)), gz_rings_schema)
    >>> float(p.sum())
    1.0
    """
    plan = _question_plan(schema)
    features = galaxy_features(latents)
    out = np.empty(schema.n_answers, dtype=np.float64)
    cache: dict = {}
    for _, func, start, keys, weights in plan:
        canonical = cache.get(func)
        if canonical is None:
            canonical = cache[func] = func(features)
        raw = weights @ np.array([canonical[k] for k in keys])
        k = len(raw)
        out[start:start + k] = PROBABILITY_FLOOR + ((1.0 - k * PROBABILITY_FLOOR) / raw.sum()) * raw
    return out
