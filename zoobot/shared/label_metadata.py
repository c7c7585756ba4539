"""Galaxy Zoo decision trees as plain Python data.

A decision tree is two dicts: a **pairs** dict ``question -> [answer suffixes]`` (question + suffix
is the label column of vote counts; dict order is the order of the model outputs) and a
**dependencies** dict ``question -> label column of the answer that leads to it`` (``None``: asked
of every galaxy, or several parents). :class:`zoobot.shared.schemas.Schema` is built from them.

Trees whose questions carry a campaign suffix (``-dr5``, ``-gz2``, ...) are "ortho"; suffixed
variants are made with :func:`change_suffix` and merged trees (``*_all_campaigns_*``, ``gz_evo_*``)
by merging campaigns in the documented order. Every ``<name>_pairs`` dict also has module-level
``<name>_questions`` and ``<name>_label_cols`` lists. The table of every tree (questions, answers,
suffix, dependencies dict, prebuilt schema) and the quirks kept from upstream are in
docs/api/shared/schemas.md.

Examples
--------
>>> from zoobot.shared import label_metadata
>>> label_metadata.rings_label_cols
['ring_yes', 'ring_no']
>>> label_metadata.decals_ortho_dependencies['bar-dr5']
'disk-edge-on-dr5_no'
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

__all__ = ["extract_questions_and_label_cols", "change_suffix"]  # plus every dict and list below


# =============================================================================================
# Helpers
# =============================================================================================

def extract_questions_and_label_cols(question_answer_pairs: Mapping[str, Sequence[str]]):
    """Questions and label columns of a pairs dict, in dict order.

    Parameters
    ----------
    question_answer_pairs : dict
        ``question -> [answer suffixes]``.

    Returns
    -------
    questions : list of str
        The questions, in dict order.
    label_cols : list of str
        ``question + answer`` for each question in dict order, then each answer in list order
        (so the answers of one question are contiguous).

    Examples
    --------
    >>> extract_questions_and_label_cols({'ring': ['_yes', '_no']})
    (['ring'], ['ring_yes', 'ring_no'])
    """
    questions = list(question_answer_pairs.keys())
    label_cols = [question + answer for question, answers in question_answer_pairs.items() for answer in answers]
    return questions, label_cols


def _split_label_col(label_col: str):
    """``'disk-edge-on-dr5_no'`` -> ``('disk-edge-on-dr5', '_no')`` (question names never contain ``_``)."""
    question, underscore, answer = label_col.partition("_")
    return question, underscore + answer


def _rename(name: str, old_suffix: str, new_suffix: str) -> str:
    return name[: len(name) - len(old_suffix)] + new_suffix


def change_suffix(
    old_pairs: Mapping[str, Sequence[str]],
    old_dependencies: Mapping[str, Optional[str]],
    old_suffix: str,
    new_suffix: str,
):
    """Rename the campaign suffix of every question of a tree (``'-cd'`` -> ``'-jwst'``, ``''`` -> ``'-dr5'``).

    Question order and answers are kept. In the dependencies dict, entries whose question carries
    ``old_suffix`` are renamed (the parent label column too); entries without it belong to another
    campaign of a shared dependencies dict and are left out. Use ``old_suffix=''`` to add a suffix
    and ``new_suffix=''`` to strip one.

    Parameters
    ----------
    old_pairs : dict
        ``question -> [answer suffixes]``; every question must end with ``old_suffix``.
    old_dependencies : dict
        ``question -> parent label column or None``.
    old_suffix, new_suffix : str
        Suffixes such as ``'-dr8'``, or ``''``.

    Returns
    -------
    pairs, dependencies : dict, dict
        New dicts (the inputs are not modified).

    Raises
    ------
    ValueError
        If a question of ``old_pairs`` does not end with ``old_suffix``.

    Examples
    --------
    >>> pairs, deps = change_suffix({'ring': ['_yes', '_no']}, {'ring': None}, '', '-x')
    >>> pairs, deps
    ({'ring-x': ['_yes', '_no']}, {'ring-x': None})
    """
    not_suffixed = [q for q in old_pairs if not q.endswith(old_suffix)]
    if not_suffixed:
        raise ValueError(
            f"change_suffix: questions {not_suffixed} do not end with old_suffix {old_suffix!r}; "
            "every question of old_pairs must carry it."
        )
    pairs = {_rename(q, old_suffix, new_suffix): list(answers) for q, answers in old_pairs.items()}

    dependencies = {}
    for question, parent in old_dependencies.items():
        if not question.endswith(old_suffix):
            continue  # another campaign's entry in a shared dependencies dict
        if parent is not None:
            parent_question, parent_answer = _split_label_col(parent)
            if parent_question.endswith(old_suffix):
                parent = _rename(parent_question, old_suffix, new_suffix) + parent_answer
        dependencies[_rename(question, old_suffix, new_suffix)] = parent
    return pairs, dependencies


def _add_suffix(pairs, dependencies, suffix):
    """Ortho version of a base tree: ``suffix`` appended to every question."""
    return change_suffix(pairs, dependencies, "", suffix)


def _suffix_some_questions(pairs, questions, suffix):
    """Copy of ``pairs`` where only the named ``questions`` get ``suffix`` (order kept)."""
    return {(q + suffix if q in questions else q): list(answers) for q, answers in pairs.items()}


def _without_questions(tree: dict, questions):
    """Copy of a pairs or dependencies dict without the named questions (order kept)."""
    return {q: (list(v) if isinstance(v, list) else v) for q, v in tree.items() if q not in questions}


def _merge_trees(*dicts):
    """Merge pairs (or dependencies) dicts in the given order; no question may appear twice."""
    merged = {}
    for d in dicts:
        repeated = set(merged) & set(d)
        if repeated:  # pragma: no cover - guards the definitions below
            raise ValueError(f"_merge_trees: questions {sorted(repeated)} appear in two trees")
        merged.update({q: (list(v) if isinstance(v, list) else v) for q, v in d.items()})
    return merged


# =============================================================================================
# GZ DECaLS (DR1/2 = "dr12", DR5, DR8) and GZ DESI
# =============================================================================================

# DR5/DR8 questions and answers without suffix. Upstream: "dr5 implicitly, deprecated" [S].
decals_pairs = {
    "smooth-or-featured": ["_smooth", "_featured-or-disk", "_artifact"],
    "disk-edge-on": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "bar": ["_strong", "_weak", "_no"],
    "bulge-size": ["_dominant", "_large", "_moderate", "_small", "_none"],
    "how-rounded": ["_round", "_in-between", "_cigar-shaped"],
    "edge-on-bulge": ["_boxy", "_none", "_rounded"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"],
    "merging": ["_none", "_minor-disturbance", "_major-disturbance", "_merger"],
}

# DR1/2 questions and answers without suffix (bar, bulge-size, how-rounded, spiral-arm-count
# and merging were asked differently in DR1/2).
decals_dr12_only_pairs = {
    "smooth-or-featured": ["_smooth", "_featured-or-disk", "_artifact"],
    "disk-edge-on": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "bar": ["_yes", "_no"],
    "bulge-size": ["_dominant", "_obvious", "_none"],
    "how-rounded": ["_completely", "_in-between", "_cigar-shaped"],
    "edge-on-bulge": ["_boxy", "_none", "_rounded"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_more-than-4"],
    "merging": ["_neither", "_tidal-debris", "_both", "_merger"],
}

# The true GZ DECaLS tree (shared by DR1/2, DR5, DR8 and DESI): spiral arms, bar and bulge size
# are asked of face-on disks. merging is asked of smooth OR featured galaxies, so it has no
# single parent and is recorded as None.
_decals_tree_dependencies = {
    "smooth-or-featured": None,
    "disk-edge-on": "smooth-or-featured_featured-or-disk",
    "has-spiral-arms": "disk-edge-on_no",
    "bar": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
    "how-rounded": "smooth-or-featured_smooth",
    "edge-on-bulge": "disk-edge-on_yes",
    "spiral-winding": "has-spiral-arms_yes",
    "spiral-arm-count": "has-spiral-arms_yes",
    "merging": None,
}

decals_dr12_ortho_pairs, _decals_dr12_ortho_dependencies = _add_suffix(
    decals_dr12_only_pairs, _decals_tree_dependencies, "-dr12"
)
decals_dr5_ortho_pairs, _decals_dr5_ortho_dependencies = _add_suffix(decals_pairs, _decals_tree_dependencies, "-dr5")
decals_dr8_ortho_pairs, _decals_dr8_ortho_dependencies = _add_suffix(decals_pairs, _decals_tree_dependencies, "-dr8")

# one dependencies dict serves all three DECaLS campaigns (and their merge); order DR1/2, DR5, DR8
decals_all_campaigns_ortho_pairs = _merge_trees(decals_dr12_ortho_pairs, decals_dr5_ortho_pairs, decals_dr8_ortho_pairs)
decals_ortho_dependencies = _merge_trees(
    _decals_dr12_ortho_dependencies, _decals_dr5_ortho_dependencies, _decals_dr8_ortho_dependencies
)

# GZ DESI: the DR8 tree without suffix, for catalogue users (upstream: not for ML training).
desi_pairs = _merge_trees(decals_pairs)
desi_dependencies = _merge_trees(_decals_tree_dependencies)


# =============================================================================================
# Old zoobot non-ortho dicts (DECaLS and GZ2 without suffixes) [S]
# =============================================================================================

decals_dr8_only_pairs = _merge_trees(decals_pairs)  # a plain copy of decals_pairs

# DR1/2 with mixed naming: the five questions that changed since DR1/2 carry "-dr12".
_DR12_CHANGED_QUESTIONS = ("bar", "bulge-size", "how-rounded", "spiral-arm-count", "merging")
decals_dr12_pairs = _suffix_some_questions(decals_dr12_only_pairs, _DR12_CHANGED_QUESTIONS, "-dr12")

# DR5/8 questions plus the five changed DR1/2 questions
decals_all_campaigns_pairs = _merge_trees(
    decals_pairs, {q: a for q, a in decals_dr12_pairs.items() if q.endswith("-dr12")}
)

# Galaxy Zoo 2 (SDSS), without suffix [S]
gz2_pairs = {
    "smooth-or-featured": ["_smooth", "_featured-or-disk", "_artifact"],
    "disk-edge-on": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "bar": ["_yes", "_no"],
    "bulge-size": ["_dominant", "_obvious", "_just-noticeable", "_no"],
    "something-odd": ["_yes", "_no"],
    "how-rounded": ["_round", "_in-between", "_cigar"],
    "bulge-shape": ["_round", "_boxy", "_no-bulge"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"],
}

# debugging tree: smooth or featured only, two answers
gz2_partial_pairs = {
    "smooth-or-featured": ["_smooth", "_featured-or-disk"],
}

# One simplified tree for every non-suffixed DECaLS and GZ2 dict above: spiral arms, bar and bulge
# size hang off featured-or-disk (as in GZ2; the true DECaLS tree asks them after disk-edge-on_no).
gz2_and_decals_dependencies = {
    "smooth-or-featured": None,
    "disk-edge-on": "smooth-or-featured_featured-or-disk",
    "has-spiral-arms": "smooth-or-featured_featured-or-disk",
    "bar": "smooth-or-featured_featured-or-disk",
    "bulge-size": "smooth-or-featured_featured-or-disk",
    "how-rounded": "smooth-or-featured_smooth",
    "bulge-shape": "disk-edge-on_yes",  # GZ2
    "edge-on-bulge": "disk-edge-on_yes",  # DECaLS
    "spiral-winding": "has-spiral-arms_yes",
    "spiral-arm-count": "has-spiral-arms_yes",
    "merging": None,  # DECaLS; asked of smooth OR featured
    "bar-dr12": "smooth-or-featured_featured-or-disk",
    "bulge-size-dr12": "smooth-or-featured_featured-or-disk",
    "how-rounded-dr12": "smooth-or-featured_smooth",
    "spiral-arm-count-dr12": "has-spiral-arms_yes",
    "merging-dr12": None,
    "something-odd": None,  # GZ2; asked of everyone who did not answer artifact
}

# the GZ2 part of gz2_and_decals_dependencies [S]
gz2_dependencies = {question: gz2_and_decals_dependencies[question] for question in gz2_pairs}


# =============================================================================================
# Galaxy Zoo 2 and GZ UKIDSS (same tree), ortho
# =============================================================================================

# The GZ2 tree. "edge-on-bulge" is not a GZ2 question (GZ2 asks bulge-shape); upstream keeps the
# key in the GZ2-like dependencies dicts, where Schema ignores it. Its parent follows bulge-shape.
_gz2_tree_dependencies = {
    "smooth-or-featured": None,
    "disk-edge-on": "smooth-or-featured_featured-or-disk",
    "has-spiral-arms": "smooth-or-featured_featured-or-disk",
    "bar": "smooth-or-featured_featured-or-disk",
    "bulge-size": "smooth-or-featured_featured-or-disk",
    "how-rounded": "smooth-or-featured_smooth",
    "bulge-shape": "disk-edge-on_yes",
    "edge-on-bulge": "disk-edge-on_yes",  # extra key, not in the pairs
    "spiral-winding": "has-spiral-arms_yes",
    "spiral-arm-count": "has-spiral-arms_yes",
    "something-odd": None,  # asked of everyone (upstream ignores the artifact branch)
}

gz2_ortho_pairs, gz2_ortho_dependencies = _add_suffix(gz2_pairs, _gz2_tree_dependencies, "-gz2")
gz2_partial_ortho_pairs = _add_suffix(gz2_partial_pairs, {}, "-gz2")[0]  # use gz2_ortho_dependencies

ukidss_ortho_pairs, ukidss_ortho_dependencies = _add_suffix(gz2_pairs, _gz2_tree_dependencies, "-ukidss")


# =============================================================================================
# GZ Rings (the finetuning demo)
# =============================================================================================

rings_pairs = {"ring": ["_yes", "_no"]}
rings_dependencies = {"ring": None}


# =============================================================================================
# GZ Hubble (v1 with clump questions; v2 simplified) and GZ CANDELS
# =============================================================================================

hubble_pairs = {
    "smooth-or-featured": ["_smooth", "_features", "_artifact"],
    "how-rounded": ["_completely", "_in-between", "_cigar-shaped"],
    "clumpy-appearance": ["_yes", "_no"],
    "disk-edge-on": ["_yes", "_no"],
    "bulge-shape": ["_rounded", "_boxy", "_none"],
    "bar": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"],
    "bulge-size": ["_none", "_just-noticeable", "_obvious", "_dominant"],
    "galaxy-symmetrical": ["_yes", "_no"],
    "clumps-embedded-larger-object": ["_yes", "_no"],
}
# (no dependencies dict exists for the non-suffixed Hubble dicts)

# In GZ Hubble, disk-edge-on follows "not clumpy", and spiral winding / arm count hang off
# disk-edge-on_no (not off has-spiral-arms). "edge-on-bulge" is an extra key (Hubble asks
# bulge-shape), kept for parity with upstream and ignored by Schema.
_hubble_tree_dependencies = {
    "smooth-or-featured": None,
    "how-rounded": "smooth-or-featured_smooth",
    "clumpy-appearance": "smooth-or-featured_features",
    "disk-edge-on": "clumpy-appearance_no",
    "bulge-shape": "disk-edge-on_yes",
    "edge-on-bulge": "disk-edge-on_yes",  # extra key, not in the pairs
    "bar": "disk-edge-on_no",
    "has-spiral-arms": "disk-edge-on_no",
    "spiral-winding": "disk-edge-on_no",
    "spiral-arm-count": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
    "galaxy-symmetrical": "clumpy-appearance_yes",
    "clumps-embedded-larger-object": "clumpy-appearance_yes",
}
hubble_ortho_pairs, hubble_ortho_dependencies = _add_suffix(hubble_pairs, _hubble_tree_dependencies, "-hubble")

# Hubble v2: no clump questions; disk-edge-on is asked after smooth-or-featured_features.
hubble_v2_pairs = {
    "smooth-or-featured": ["_smooth", "_features", "_artifact"],
    "how-rounded": ["_completely", "_in-between", "_cigar-shaped"],
    "disk-edge-on": ["_yes", "_no"],
    "bulge-shape": ["_rounded", "_boxy", "_none"],
    "bar": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"],
    "bulge-size": ["_none", "_just-noticeable", "_obvious", "_dominant"],
}
_hubble_v2_tree_dependencies = {
    "smooth-or-featured": None,
    "how-rounded": "smooth-or-featured_smooth",
    "disk-edge-on": "smooth-or-featured_features",
    "bulge-shape": "disk-edge-on_yes",
    "edge-on-bulge": "disk-edge-on_yes",  # extra key, not in the pairs
    "bar": "disk-edge-on_no",
    "has-spiral-arms": "disk-edge-on_no",
    "spiral-winding": "disk-edge-on_no",
    "spiral-arm-count": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
}
hubble_v2_ortho_pairs, hubble_v2_ortho_dependencies = _add_suffix(
    hubble_v2_pairs, _hubble_v2_tree_dependencies, "-hubble"
)

# GZ CANDELS: like Hubble, but edge-on-bulge has yes/no answers, and the merging answers are in
# the order merger, tidal-debris, both, neither.
candels_pairs = {
    "smooth-or-featured": ["_smooth", "_features", "_artifact"],
    "how-rounded": ["_completely", "_in-between", "_cigar-shaped"],
    "clumpy-appearance": ["_yes", "_no"],
    "disk-edge-on": ["_yes", "_no"],
    "edge-on-bulge": ["_yes", "_no"],
    "bar": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_5-plus", "_cant-tell"],
    "bulge-size": ["_none", "_obvious", "_dominant"],
    "merging": ["_merger", "_tidal-debris", "_both", "_neither"],
}
# (no dependencies dict exists for candels_pairs)
_candels_tree_dependencies = {
    "smooth-or-featured": None,
    "how-rounded": "smooth-or-featured_smooth",
    "clumpy-appearance": "smooth-or-featured_features",
    "disk-edge-on": "clumpy-appearance_no",
    "edge-on-bulge": "disk-edge-on_yes",
    "bar": "disk-edge-on_no",
    "has-spiral-arms": "disk-edge-on_no",
    "spiral-winding": "disk-edge-on_no",
    "spiral-arm-count": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
    "merging": None,
}
candels_ortho_pairs, candels_ortho_dependencies = _add_suffix(candels_pairs, _candels_tree_dependencies, "-candels")


# =============================================================================================
# GZ Cosmic Dawn (HSC) and GZ Euclid
# =============================================================================================

cosmic_dawn_pairs = {
    "smooth-or-featured": ["_smooth", "_featured-or-disk", "_problem"],
    "disk-edge-on": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "bar": ["_strong", "_weak", "_no"],
    "bulge-size": ["_dominant", "_large", "_moderate", "_small", "_none"],
    "how-rounded": ["_round", "_in-between", "_cigar-shaped"],
    "edge-on-bulge": ["_boxy", "_none", "_rounded"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"],
    "merging": ["_none", "_minor-disturbance", "_major-disturbance", "_merger"],
    "clumps": ["_yes", "_no"],
    "problem": ["_star", "_artifact", "_zoom"],
    "artifact": ["_satellite", "_scattered", "_diffraction", "_ray", "_saturation", "_other"],
}
cosmic_dawn_dependencies = {
    "smooth-or-featured": None,
    "disk-edge-on": "smooth-or-featured_featured-or-disk",
    "has-spiral-arms": "disk-edge-on_no",
    "bar": "disk-edge-on_no",
    "bulge-size": "disk-edge-on_no",
    "how-rounded": "smooth-or-featured_smooth",
    "edge-on-bulge": "disk-edge-on_yes",
    "spiral-winding": "has-spiral-arms_yes",
    "spiral-arm-count": "has-spiral-arms_yes",
    "merging": None,
    "clumps": "disk-edge-on_no",
    "problem": "smooth-or-featured_problem",
    "artifact": "problem_artifact",
}
cosmic_dawn_ortho_pairs, cosmic_dawn_ortho_dependencies = _add_suffix(
    cosmic_dawn_pairs, cosmic_dawn_dependencies, "-cd"
)

# GZ Euclid: the Cosmic Dawn tree with one more artifact answer, "_ghost".
euclid_pairs = {
    "smooth-or-featured": ["_smooth", "_featured-or-disk", "_problem"],
    "disk-edge-on": ["_yes", "_no"],
    "has-spiral-arms": ["_yes", "_no"],
    "bar": ["_strong", "_weak", "_no"],
    "bulge-size": ["_dominant", "_large", "_moderate", "_small", "_none"],
    "how-rounded": ["_round", "_in-between", "_cigar-shaped"],
    "edge-on-bulge": ["_boxy", "_none", "_rounded"],
    "spiral-winding": ["_tight", "_medium", "_loose"],
    "spiral-arm-count": ["_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"],
    "merging": ["_none", "_minor-disturbance", "_major-disturbance", "_merger"],
    "clumps": ["_yes", "_no"],
    "problem": ["_star", "_artifact", "_zoom"],
    "artifact": ["_satellite", "_scattered", "_diffraction", "_ray", "_saturation", "_other", "_ghost"],
}
euclid_dependencies = _merge_trees(cosmic_dawn_dependencies)  # same shape as Cosmic Dawn
euclid_ortho_pairs, euclid_ortho_dependencies = _add_suffix(euclid_pairs, euclid_dependencies, "-euclid")


# =============================================================================================
# GZ JWST: CEERS and COSMOS
# =============================================================================================

# JWST CEERS. (Upstream first assigns this name to Cosmic Dawn renamed to -jwst, then overwrites
# it with this dict; only this value was ever importable.) clumps and merging ignore the artifact
# branch, so they have no parent.
jwst_ortho_pairs = {
    "smooth-or-featured-jwst": ["_smooth", "_featured-or-disk", "_star-artifact-zoom"],
    "disk-edge-on-jwst": ["_yes", "_no"],
    "has-spiral-arms-jwst": ["_yes", "_no"],
    "bar-jwst": ["_strong", "_weak", "_no"],
    "bulge-size-jwst": ["_dominant", "_large", "_moderate", "_small", "_none"],
    "how-rounded-jwst": ["_round", "_in-between", "_cigar-shaped"],
    "edge-on-bulge-jwst": ["_boxy", "_none", "_rounded"],
    "spiral-winding-jwst": ["_tight", "_medium", "_loose"],
    "spiral-arm-count-jwst": ["_1", "_2", "_3", "_4", "_more-than-4", "_cant-tell"],
    "clumps-jwst": ["_yes", "_no"],
    "merging-jwst": ["_none", "_minor-disturbance", "_major-disturbance", "_merger"],
    "problem-jwst": ["_star", "_artifact", "_bad-zoom"],
}
jwst_ortho_dependencies = {
    "smooth-or-featured-jwst": None,
    "disk-edge-on-jwst": "smooth-or-featured-jwst_featured-or-disk",
    "has-spiral-arms-jwst": "disk-edge-on-jwst_no",
    "bar-jwst": "disk-edge-on-jwst_no",
    "bulge-size-jwst": "disk-edge-on-jwst_no",
    "how-rounded-jwst": "smooth-or-featured-jwst_smooth",
    "edge-on-bulge-jwst": "disk-edge-on-jwst_yes",
    "spiral-winding-jwst": "has-spiral-arms-jwst_yes",
    "spiral-arm-count-jwst": "has-spiral-arms-jwst_yes",
    "clumps-jwst": None,
    "merging-jwst": None,
    "problem-jwst": "smooth-or-featured-jwst_star-artifact-zoom",
}

# JWST COSMOS: the CEERS tree without how-rounded.
jwst_cosmos_ortho_pairs = _without_questions(jwst_ortho_pairs, ["how-rounded-jwst"])
jwst_cosmos_ortho_dependencies = _without_questions(jwst_ortho_dependencies, ["how-rounded-jwst"])


# =============================================================================================
# GZ Evo: every campaign merged (the pretraining trees)
# =============================================================================================

# v1: DECaLS (DR1/2, DR5, DR8), GZ2, CANDELS, Hubble, Cosmic Dawn, in that order.
gz_evo_v1_pairs = _merge_trees(
    decals_all_campaigns_ortho_pairs, gz2_ortho_pairs, candels_ortho_pairs, hubble_ortho_pairs, cosmic_dawn_ortho_pairs
)
gz_evo_v1_dependencies = _merge_trees(
    decals_ortho_dependencies,
    gz2_ortho_dependencies,
    candels_ortho_dependencies,
    hubble_ortho_dependencies,
    cosmic_dawn_ortho_dependencies,
)
# v1 public: as v1 without Cosmic Dawn
gz_evo_v1_public_pairs = _merge_trees(
    decals_all_campaigns_ortho_pairs, gz2_ortho_pairs, candels_ortho_pairs, hubble_ortho_pairs
)
gz_evo_v1_public_dependencies = _merge_trees(
    decals_ortho_dependencies, gz2_ortho_dependencies, candels_ortho_dependencies, hubble_ortho_dependencies
)

# v2: DECaLS, GZ2, CANDELS, Hubble v2, Cosmic Dawn, Euclid
gz_evo_v2_pairs = _merge_trees(
    decals_all_campaigns_ortho_pairs,
    gz2_ortho_pairs,
    candels_ortho_pairs,
    hubble_v2_ortho_pairs,
    cosmic_dawn_ortho_pairs,
    euclid_ortho_pairs,
)
gz_evo_v2_dependencies = _merge_trees(
    decals_ortho_dependencies,
    gz2_ortho_dependencies,
    candels_ortho_dependencies,
    hubble_v2_ortho_dependencies,
    cosmic_dawn_ortho_dependencies,
    euclid_ortho_dependencies,
)
# v2 public: DECaLS, GZ2, CANDELS, Hubble v2
gz_evo_v2_public_pairs = _merge_trees(
    decals_all_campaigns_ortho_pairs, gz2_ortho_pairs, candels_ortho_pairs, hubble_v2_ortho_pairs
)
gz_evo_v2_public_dependencies = _merge_trees(
    decals_ortho_dependencies, gz2_ortho_dependencies, candels_ortho_dependencies, hubble_v2_ortho_dependencies
)


# =============================================================================================
# <name>_questions and <name>_label_cols for every <name>_pairs dict
# =============================================================================================

decals_dr12_ortho_questions, decals_dr12_ortho_label_cols = extract_questions_and_label_cols(decals_dr12_ortho_pairs)
decals_dr5_ortho_questions, decals_dr5_ortho_label_cols = extract_questions_and_label_cols(decals_dr5_ortho_pairs)
decals_dr8_ortho_questions, decals_dr8_ortho_label_cols = extract_questions_and_label_cols(decals_dr8_ortho_pairs)
decals_all_campaigns_ortho_questions, decals_all_campaigns_ortho_label_cols = extract_questions_and_label_cols(
    decals_all_campaigns_ortho_pairs
)
desi_questions, desi_label_cols = extract_questions_and_label_cols(desi_pairs)
gz2_ortho_questions, gz2_ortho_label_cols = extract_questions_and_label_cols(gz2_ortho_pairs)
rings_questions, rings_label_cols = extract_questions_and_label_cols(rings_pairs)
hubble_questions, hubble_label_cols = extract_questions_and_label_cols(hubble_pairs)
hubble_ortho_questions, hubble_ortho_label_cols = extract_questions_and_label_cols(hubble_ortho_pairs)
hubble_v2_questions, hubble_v2_label_cols = extract_questions_and_label_cols(hubble_v2_pairs)
hubble_v2_ortho_questions, hubble_v2_ortho_label_cols = extract_questions_and_label_cols(hubble_v2_ortho_pairs)
candels_questions, candels_label_cols = extract_questions_and_label_cols(candels_pairs)
candels_ortho_questions, candels_ortho_label_cols = extract_questions_and_label_cols(candels_ortho_pairs)
cosmic_dawn_ortho_questions, cosmic_dawn_ortho_label_cols = extract_questions_and_label_cols(cosmic_dawn_ortho_pairs)
cosmic_dawn_questions, cosmic_dawn_label_cols = extract_questions_and_label_cols(cosmic_dawn_pairs)
jwst_ortho_questions, jwst_ortho_label_cols = extract_questions_and_label_cols(jwst_ortho_pairs)
jwst_cosmos_ortho_questions, jwst_cosmos_ortho_label_cols = extract_questions_and_label_cols(jwst_cosmos_ortho_pairs)
ukidss_ortho_questions, ukidss_ortho_label_cols = extract_questions_and_label_cols(ukidss_ortho_pairs)
euclid_ortho_questions, euclid_ortho_label_cols = extract_questions_and_label_cols(euclid_ortho_pairs)
euclid_questions, euclid_label_cols = extract_questions_and_label_cols(euclid_pairs)
gz_evo_v1_questions, gz_evo_v1_label_cols = extract_questions_and_label_cols(gz_evo_v1_pairs)
gz_evo_v1_public_questions, gz_evo_v1_public_label_cols = extract_questions_and_label_cols(gz_evo_v1_public_pairs)
gz_evo_v2_questions, gz_evo_v2_label_cols = extract_questions_and_label_cols(gz_evo_v2_pairs)
gz_evo_v2_public_questions, gz_evo_v2_public_label_cols = extract_questions_and_label_cols(gz_evo_v2_public_pairs)
decals_questions, decals_label_cols = extract_questions_and_label_cols(decals_pairs)
decals_dr8_only_questions, decals_dr8_only_label_cols = extract_questions_and_label_cols(decals_dr8_only_pairs)
decals_dr12_questions, decals_dr12_label_cols = extract_questions_and_label_cols(decals_dr12_pairs)
decals_dr12_only_questions, decals_dr12_only_label_cols = extract_questions_and_label_cols(decals_dr12_only_pairs)
decals_all_campaigns_questions, decals_all_campaigns_label_cols = extract_questions_and_label_cols(
    decals_all_campaigns_pairs
)
gz2_questions, gz2_label_cols = extract_questions_and_label_cols(gz2_pairs)
gz2_partial_questions, gz2_partial_label_cols = extract_questions_and_label_cols(gz2_partial_pairs)
gz2_partial_ortho_questions, gz2_partial_ortho_label_cols = extract_questions_and_label_cols(gz2_partial_ortho_pairs)
