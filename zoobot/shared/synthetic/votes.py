"""Volunteer votes drawn down the decision tree (docs/api/shared/synthetic.md).

``counts[root] ~ Multinomial(N, p_root)`` and every other question gets
``Multinomial(count of the answer that leads to it, p_question)``: the same as each of the N
volunteers walking the tree on their own. So a child question's total is *exactly* its parent
answer's count, and unasked questions get 0 votes (never NaN).

Details:

- N is 40 for 70 % of galaxies and 5 for 30 % (GZ DECaLS' retired vs. active-learning galaxies).
- Questions asked of everyone besides the first one (``merging``, GZ2's ``something-odd``) get the
  volunteers who did not answer "artifact" (or "problem", ...) to the first question.
- Trees that merge several campaigns (``decals_all_campaigns_ortho``, ``gz_evo_*``; one
  ``smooth-or-featured-<campaign>`` question per campaign) are like real merged catalogues: each
  galaxy was shown in one campaign, chosen uniformly, and the other campaigns' questions get 0 votes.
"""
from __future__ import annotations

import numpy as np

from .answers import base_question

__all__ = ["sample_votes", "draw_n_volunteers", "vote_plan"]

_ARTIFACT_SUFFIXES = ("_artifact", "_problem", "_star-artifact-zoom")


def draw_n_volunteers(rng: np.random.Generator) -> int:
    """40 volunteers for 70 % of galaxies, 5 for the other 30 %."""
    return 40 if rng.random() < 0.7 else 5


_PLANS: dict = {}


def vote_plan(schema) -> tuple:
    """How votes flow through ``schema``.

    Returns
    -------
    tuple of (steps, n_campaigns)
        ``steps`` lists, parents before children, ``(start, end, source, campaign)`` per question,
        where ``end`` is exclusive and ``source`` is ``('all',)``, ``('parent', answer_index)`` or
        ``('not', root_start, root_end, artifact_index)`` (the N volunteers minus those who answered
        ``artifact_index``); ``campaign`` is an int (or None for questions every galaxy gets).
        Cached per schema object.
    """
    cached = _PLANS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    plan = _build_vote_plan(schema)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[id(schema)] = (schema, plan)
    return plan


def _build_vote_plan(schema) -> tuple:
    questions = list(schema.questions)
    roots = [q for q in questions if q.asked_after is None]
    primaries = [q for q in roots if base_question(q.text) == "smooth-or-featured"]

    def suffix(q) -> str:
        base = base_question(q.text) or q.text
        return q.text[len(base):]

    if len(primaries) > 1:
        campaign_of_suffix = {suffix(q): i for i, q in enumerate(primaries)}
        n_campaigns = len(primaries)
    else:
        campaign_of_suffix = None
        n_campaigns = 1
    primary_of_campaign = {}
    for i, q in enumerate(primaries):
        primary_of_campaign[i if campaign_of_suffix is not None else 0] = q

    def root_of(q):
        while q.asked_after is not None:
            q = q.asked_after.question
        return q

    def campaign(q):
        root = root_of(q)
        if campaign_of_suffix is None:
            return 0
        return campaign_of_suffix.get(suffix(root))

    # parents before children: sort by depth, stable in schema order
    def depth(q) -> int:
        d = 0
        while q.asked_after is not None:
            q, d = q.asked_after.question, d + 1
        return d

    steps = []
    for q in sorted(questions, key=depth):
        start, end = q.start_index, q.end_index + 1
        c = campaign(q)
        if q.asked_after is not None:
            source = ("parent", q.asked_after.index)
        else:
            primary = primary_of_campaign.get(c) if c is not None else None
            if primary is None or primary is q:
                source = ("all",)
            else:
                art = [a.index for a in primary.answers if a.text[len(primary.text):] in _ARTIFACT_SUFFIXES]
                source = ("not", primary.start_index, primary.end_index + 1, art[0] if art else None)
        steps.append((start, end, source, c))
    return tuple(steps), n_campaigns


def sample_votes(probs: np.ndarray, schema, rng: np.random.Generator, n_volunteers: int | None = None) -> np.ndarray:
    """Draw vote counts for every answer of ``schema``, walking the tree.

    Parameters
    ----------
    probs : ndarray of shape (schema.n_answers,)
        P(answer | question asked), e.g. from :func:`~zoobot.shared.synthetic.answer_probabilities`.
    schema : zoobot.shared.schemas.Schema
    rng : numpy.random.Generator
    n_volunteers : int, optional
        Volunteers who saw the galaxy; drawn with :func:`draw_n_volunteers` if None.

    Returns
    -------
    ndarray of shape (schema.n_answers,), int64
        Vote counts; a child question's total equals its parent answer's count.

    Raises
    ------
    ValueError
        If ``probs`` has the wrong length or ``n_volunteers`` is negative.

    Examples
    --------
    >>> import numpy as np
    >>> from zoobot.shared.schemas import gz_rings_schema
    >>> votes = sample_votes(np.array([0.3, 0.7]), gz_rings_schema, np.random.default_rng(0), n_volunteers=10)
    >>> int(votes.sum())
    10
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (schema.n_answers,):
        raise ValueError(
            f"probs must have shape ({schema.n_answers},) to match the schema's label columns, got {probs.shape}."
        )
    if n_volunteers is None:
        n_volunteers = draw_n_volunteers(rng)
    if int(n_volunteers) < 0:
        raise ValueError(f"n_volunteers must be >= 0, got {n_volunteers}.")
    steps, n_campaigns = vote_plan(schema)
    shown_in = int(rng.integers(n_campaigns)) if n_campaigns > 1 else 0
    counts = np.zeros(schema.n_answers, dtype=np.int64)
    for start, end, source, campaign in steps:
        if campaign is not None and campaign != shown_in:
            continue
        if source[0] == "all":
            n = int(n_volunteers)
        elif source[0] == "parent":
            n = int(counts[source[1]])
        else:
            _, r0, r1, art = source
            n = int(counts[r0:r1].sum()) - (int(counts[art]) if art is not None else 0)
        if n > 0:
            p = probs[start:end]
            counts[start:end] = rng.multinomial(n, p / p.sum())
    return counts
