"""Schemas: a Galaxy Zoo decision tree as objects that know where each answer sits in the model output.

A :class:`Schema` is built from a pairs dict and a dependencies dict (see
:mod:`zoobot.shared.label_metadata`). It orders the label columns (question by question, answers
contiguous), gives each question its inclusive ``(start, end)`` slice of the model outputs
(``question_index_groups``, used by the Dirichlet-multinomial loss), links each question to the
answer that leads to it, and computes joint probabilities down the tree.

Prebuilt schemas for every Galaxy Zoo tree are module attributes (``decals_dr5_ortho_schema``,
``gz_rings_schema``, ...); :func:`list_schemas` names them and :func:`get_schema` fetches one by name.

Examples
--------
>>> from zoobot.shared import label_metadata, schemas
>>> schema = schemas.Schema(label_metadata.decals_pairs, label_metadata.gz2_and_decals_dependencies)
>>> schema.question_index_groups[:2]
[(0, 2), (3, 4)]
>>> schema.get_question('disk-edge-on').asked_after
Answer('smooth-or-featured_featured-or-disk')
>>> schemas.get_schema('gz_rings').label_cols
['ring_yes', 'ring_no']
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from zoobot.shared import label_metadata
from zoobot.shared.errors import close_matches, format_examples, unknown_option_error

__all__ = ["Answer", "Question", "Schema", "get_schema", "list_schemas"]


def _did_you_mean(word: str, possibilities) -> str:
    matches = close_matches(word, possibilities)
    return f" Did you mean {format_examples(matches)}?" if matches else ""


# =============================================================================================
# Answer and Question
# =============================================================================================

class Answer:
    """One answer of a question: one label column, one model output.

    Attributes
    ----------
    text : str
        The full label column, e.g. ``'smooth-or-featured-dr5_smooth'``.
    question : Question
        The question this answer belongs to.
    index : int
        Position of the column in ``Schema.label_cols`` (and of the model output).
    next_questions : list of Question
        Questions asked only after this answer (empty for leaves). ``next_question`` is an alias.
    """

    def __init__(self, text: str, question: "Question", index: int):
        self.text = text
        self.question = question
        self.index = int(index)
        self.next_questions: list[Question] = []

    @property
    def next_question(self) -> list:
        """Alias of :attr:`next_questions` (upstream name)."""
        return self.next_questions

    @property
    def pretty_text(self) -> str:
        """Human-readable text: ``'disk-edge-on-dr5_no'`` -> ``'Disk Edge On Dr5 No'``."""
        return self.text.replace("-", " ").replace("_", " ").title()

    def __repr__(self) -> str:
        return f"Answer({self.text!r})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Answer):
            return NotImplemented
        return self.text == other.text and self.index == other.index

    def __hash__(self) -> int:
        return hash(("Answer", self.text, self.index))


class Question:
    """One question of a decision tree.

    Attributes
    ----------
    text : str
        The question, e.g. ``'smooth-or-featured-dr5'``.
    answers : list of Answer
        In label-column order.
    start_index, end_index : int
        First and last (inclusive) position of this question's answers in ``Schema.label_cols``.
    asked_after : Answer or None
        The answer that leads to this question, or ``None`` if it is always asked (or has
        several parents, which zoobot records as ``None``).
    """

    def __init__(self, text: str, answer_suffixes: Sequence[str], start_index: int):
        self.text = text
        self.start_index = int(start_index)
        self.answers = [Answer(text + suffix, self, start_index + i) for i, suffix in enumerate(answer_suffixes)]
        self.end_index = int(start_index + len(self.answers) - 1)
        self.asked_after: Optional[Answer] = None

    @property
    def pretty_text(self) -> str:
        """Human-readable text: ``'disk-edge-on-dr5'`` -> ``'Disk Edge On Dr5'``."""
        return self.text.replace("-", " ").title()

    def __repr__(self) -> str:
        return f"Question({self.text!r}, answers={len(self.answers)}, indices=({self.start_index}, {self.end_index}))"

    def _key(self):
        parent = None if self.asked_after is None else self.asked_after.text
        return (self.text, tuple(a.text for a in self.answers), self.start_index, parent)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Question):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("Question", self.text, self.start_index))


# =============================================================================================
# Schema
# =============================================================================================

class Schema:
    """A decision tree: questions, answers, label columns, output slices and dependencies.

    Parameters
    ----------
    question_answer_pairs : dict
        ``question -> [answer suffixes]`` (e.g. ``label_metadata.decals_dr5_ortho_pairs``). The
        label columns are ``question + suffix``, in dict order.
    dependencies : dict
        ``question -> label column of the answer that leads to it``, or ``None`` if always asked.
        Every question needs an entry (a schema with a single question may omit it). Extra keys
        for questions not in ``question_answer_pairs`` are ignored.
    name : str, optional
        A name shown in ``repr`` and error messages (prebuilt schemas have one).

    Attributes
    ----------
    question_answer_pairs, dependencies : dict
        Copies of the inputs.
    questions : list of Question
    answers : list of Answer
        All answers, in label-column order.
    label_cols : list of str
    question_index_groups : list of (int, int)
        Inclusive ``(start, end)`` output indices of each question, in question order.
    named_index_groups : dict
        ``Question -> (start, end)``.
    n_questions, n_answers : int
    name : str or None

    Raises
    ------
    TypeError
        If the inputs are not dicts of the documented types.
    ValueError
        (E9) If a question lacks a dependencies entry, a dependency names an answer that is not a
        label column of this schema, or the dependencies form a cycle; also for empty trees,
        questions without answers and duplicated label columns.

    Examples
    --------
    >>> schema = Schema({'ring': ['_yes', '_no']}, {'ring': None}, name='rings')
    >>> schema.label_cols, schema.question_index_groups
    (['ring_yes', 'ring_no'], [(0, 1)])
    >>> schema
    Schema(name='rings', n_questions=1, n_answers=2)
    """

    def __init__(self, question_answer_pairs: Mapping, dependencies: Mapping, name: Optional[str] = None):
        _check_types(question_answer_pairs, dependencies, name)
        self.question_answer_pairs = {q: list(answers) for q, answers in question_answer_pairs.items()}
        self.dependencies = dict(dependencies)
        self.name = name

        self.questions: list[Question] = []
        start = 0
        for question_text, answer_suffixes in self.question_answer_pairs.items():
            question = Question(question_text, answer_suffixes, start)
            self.questions.append(question)
            start = question.end_index + 1
        self.answers: list[Answer] = [answer for question in self.questions for answer in question.answers]
        self.label_cols: list[str] = [answer.text for answer in self.answers]
        self._question_by_text = {q.text: q for q in self.questions}
        self._answer_by_text = {a.text: a for a in self.answers}
        _check_unique_label_cols(self.label_cols, self._describe())

        self._link_dependencies()

    # ---------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"schema {self.name!r}" if self.name else "this schema"

    def _link_dependencies(self) -> None:
        missing = [q.text for q in self.questions if q.text not in self.dependencies]
        if missing and len(self.questions) > 1:
            hints = []
            for text in missing:
                unused_keys = [k for k in self.dependencies if k not in self._question_by_text]
                matches = close_matches(text, unused_keys, n=1)
                if matches:
                    hints.append(f"{text!r} (did you mean key {format_examples(matches)}?)")
            hint_text = f" Possible misspelled keys: {'; '.join(hints)}." if hints else ""
            raise ValueError(
                f"Question(s) {format_examples(missing, limit=20)} of {self._describe()} have no entry in "
                f"dependencies. Give every question the label column of the answer that leads to it, or "
                f"use None if always asked.{hint_text}"
            )

        for question in self.questions:
            parent = self.dependencies.get(question.text)
            if parent is None:
                continue
            if not isinstance(parent, str):
                raise TypeError(
                    f"dependencies[{question.text!r}] must be a label column (str) or None, "
                    f"got {type(parent).__name__} {parent!r}."
                )
            if parent not in self._answer_by_text:
                raise ValueError(
                    f"dependencies[{question.text!r}] = {parent!r} is not a label column (question + answer) of "
                    f"{self._describe()}.{_did_you_mean(parent, self.label_cols)}"
                )
            answer = self._answer_by_text[parent]
            question.asked_after = answer
            answer.next_questions.append(question)

        self._check_acyclic()

    def _check_acyclic(self) -> None:
        for question in self.questions:
            chain = [question.text]
            current = question.asked_after
            while current is not None:
                parent_question = current.question
                if parent_question.text in chain:
                    cycle = chain[chain.index(parent_question.text):] + [parent_question.text]
                    raise ValueError(
                        f"The dependencies of {self._describe()} form a cycle: "
                        f"{' -> '.join(reversed(cycle))} (each question is asked after the one before it). "
                        "Set the first question of the tree to None."
                    )
                chain.append(parent_question.text)
                current = parent_question.asked_after

    # ---------------------------------------------------------------------------------------
    # derived views
    # ---------------------------------------------------------------------------------------

    @property
    def n_questions(self) -> int:
        """Number of questions."""
        return len(self.questions)

    @property
    def n_answers(self) -> int:
        """Number of answers (label columns, model outputs)."""
        return len(self.answers)

    @property
    def question_index_groups(self) -> list:
        """Inclusive ``(start, end)`` output indices of each question, in question order."""
        return [(q.start_index, q.end_index) for q in self.questions]

    @property
    def named_index_groups(self) -> dict:
        """``{Question: (start, end)}`` with inclusive indices."""
        return {q: (q.start_index, q.end_index) for q in self.questions}

    def get_question(self, text: str) -> Question:
        """The :class:`Question` called ``text``.

        Raises
        ------
        ValueError
            (E9) If there is no such question; the message suggests close matches.

        Examples
        --------
        >>> gz_rings_schema.get_question('ring').answers
        [Answer('ring_yes'), Answer('ring_no')]
        """
        try:
            return self._question_by_text[text]
        except (KeyError, TypeError):
            extra = ""
            if isinstance(text, str) and text in self._answer_by_text:
                extra = " That is an answer (label column); use get_answer."
            raise ValueError(
                f"{text!r} is not a question of {self._describe()}.{extra}"
                f"{_did_you_mean(text, self._question_by_text)} "
                f"Questions: {format_examples(self._question_by_text, limit=10)}."
            ) from None

    def get_answer(self, text: str) -> Answer:
        """The :class:`Answer` whose label column is ``text`` (e.g. ``'smooth-or-featured-dr5_smooth'``).

        Raises
        ------
        ValueError
            (E9) If there is no such label column; the message suggests close matches.
        """
        try:
            return self._answer_by_text[text]
        except (KeyError, TypeError):
            extra = ""
            if isinstance(text, str) and text in self._question_by_text:
                example = self._question_by_text[text].answers[0].text
                extra = f" That is a question; answers are full label columns such as {example!r}."
            raise ValueError(
                f"{text!r} is not an answer (label column) of {self._describe()}.{extra}"
                f"{_did_you_mean(text, self.label_cols)}"
            ) from None

    def joint_p(self, prob_of_answers, answer_text: str) -> np.ndarray:
        """Probability of reaching and giving an answer: p(answer | asked) x p(reaching its question).

        Recursive: the probability of reaching a question is the joint probability of the answer it
        is asked after; questions asked of everyone are reached with probability 1.

        Parameters
        ----------
        prob_of_answers : array-like, shape (n_galaxies, n_answers)
            Per-answer probabilities given the question is asked (e.g. predicted vote fractions),
            columns in ``label_cols`` order.
        answer_text : str
            A label column, e.g. ``'bar-dr5_strong'``.

        Returns
        -------
        numpy.ndarray, shape (n_galaxies,)

        Raises
        ------
        ValueError
            (E10) If ``prob_of_answers`` is not 2-D with ``n_answers`` columns; (E9) for an unknown answer.

        Examples
        --------
        >>> s = Schema({'a': ['_x', '_y'], 'b': ['_u', '_v']}, {'a': None, 'b': 'a_x'})
        >>> s.joint_p(np.array([[0.5, 0.5, 0.2, 0.8]]), 'b_u')
        array([0.1])
        """
        probs = np.asarray(prob_of_answers)
        if probs.ndim != 2 or probs.shape[1] != self.n_answers:
            raise ValueError(
                f"prob_of_answers must have shape (n_galaxies, {self.n_answers}) for {self._describe()}; "
                f"expected width {self.n_answers}, got shape {probs.shape}."
            )
        answer = self.get_answer(answer_text)
        p = probs[:, answer.index]
        parent = answer.question.asked_after
        if parent is None:
            return p
        return p * self.joint_p(probs, parent.text)

    # ---------------------------------------------------------------------------------------
    # serialisation, comparison
    # ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-serialisable description (used in checkpoints): pairs, one dependency per question, name.

        Extra dependency keys (for questions not in this schema) are left out.

        Examples
        --------
        >>> gz_rings_schema.to_dict()
        {'question_answer_pairs': {'ring': ['_yes', '_no']}, 'dependencies': {'ring': None}, 'name': 'gz_rings'}
        """
        return {
            "question_answer_pairs": {q: list(answers) for q, answers in self.question_answer_pairs.items()},
            "dependencies": {
                q.text: (None if q.asked_after is None else q.asked_after.text) for q in self.questions
            },
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Schema":
        """Rebuild a schema from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``d`` lacks ``'question_answer_pairs'`` or ``'dependencies'``.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"Schema.from_dict expects a dict from Schema.to_dict(), got {type(d).__name__}.")
        missing = [key for key in ("question_answer_pairs", "dependencies") if key not in d]
        if missing:
            raise ValueError(
                f"Schema.from_dict: missing key(s) {missing}; expected the output of Schema.to_dict() with keys "
                f"'question_answer_pairs', 'dependencies' and optionally 'name'. Got keys {list(d)}."
            )
        return cls(d["question_answer_pairs"], d["dependencies"], name=d.get("name"))

    def _content_key(self):
        return tuple(q._key() for q in self.questions)

    def __eq__(self, other) -> bool:
        """Equal when the trees are equal: same questions, answers and order, same parents.

        The ``name`` and ignored extra dependency keys do not matter.
        """
        if not isinstance(other, Schema):
            return NotImplemented
        return self._content_key() == other._content_key()

    def __hash__(self) -> int:
        return hash(self._content_key())

    def __repr__(self) -> str:
        name = f"name={self.name!r}, " if self.name else ""
        return f"Schema({name}n_questions={self.n_questions}, n_answers={self.n_answers})"


def _check_types(question_answer_pairs, dependencies, name) -> None:
    if not isinstance(question_answer_pairs, Mapping):
        raise TypeError(
            f"question_answer_pairs must be a dict of question -> list of answer suffixes, "
            f"got {type(question_answer_pairs).__name__}."
        )
    if not isinstance(dependencies, Mapping):
        raise TypeError(
            "dependencies must be a dict of question -> parent label column (or None), "
            f"got {type(dependencies).__name__}."
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}.")
    if len(question_answer_pairs) == 0:
        raise ValueError("question_answer_pairs is empty: a schema needs at least one question.")
    for question, answers in question_answer_pairs.items():
        if not isinstance(question, str):
            raise TypeError(f"Questions must be str, got {type(question).__name__} {question!r}.")
        if isinstance(answers, str) or not isinstance(answers, Sequence):
            raise TypeError(
                f"The answers of {question!r} must be a list of answer suffixes such as ['_yes', '_no'], "
                f"got {answers!r}."
            )
        if len(answers) == 0:
            raise ValueError(f"Question {question!r} has no answers.")
        bad = [a for a in answers if not isinstance(a, str)]
        if bad:
            raise TypeError(f"The answers of {question!r} must be str, got {bad!r}.")


def _check_unique_label_cols(label_cols, describe) -> None:
    seen, repeated = set(), []
    for col in label_cols:
        if col in seen:
            repeated.append(col)
        seen.add(col)
    if repeated:
        raise ValueError(f"Label columns {format_examples(repeated)} appear twice in {describe}; each must be unique.")


# =============================================================================================
# Prebuilt schemas
# =============================================================================================

_PREBUILT: dict = {}


def _prebuilt(name: str, pairs: dict, dependencies: dict) -> Schema:
    schema = Schema(pairs, dependencies, name=name)
    _PREBUILT[name] = schema
    return schema


lm = label_metadata

# the 16 prebuilt schemas of upstream zoobot, in upstream order
decals_dr5_ortho_schema = _prebuilt("decals_dr5_ortho", lm.decals_dr5_ortho_pairs, lm.decals_ortho_dependencies)
decals_dr8_ortho_schema = _prebuilt("decals_dr8_ortho", lm.decals_dr8_ortho_pairs, lm.decals_ortho_dependencies)
decals_all_campaigns_ortho_schema = _prebuilt(
    "decals_all_campaigns_ortho", lm.decals_all_campaigns_ortho_pairs, lm.decals_ortho_dependencies
)
gz2_ortho_schema = _prebuilt("gz2_ortho", lm.gz2_ortho_pairs, lm.gz2_ortho_dependencies)
gz_candels_ortho_schema = _prebuilt("gz_candels_ortho", lm.candels_ortho_pairs, lm.candels_ortho_dependencies)
gz_hubble_ortho_schema = _prebuilt("gz_hubble_ortho", lm.hubble_ortho_pairs, lm.hubble_ortho_dependencies)
cosmic_dawn_ortho_schema = _prebuilt(
    "cosmic_dawn_ortho", lm.cosmic_dawn_ortho_pairs, lm.cosmic_dawn_ortho_dependencies
)
cosmic_dawn_schema = _prebuilt("cosmic_dawn", lm.cosmic_dawn_pairs, lm.cosmic_dawn_dependencies)
gz_rings_schema = _prebuilt("gz_rings", lm.rings_pairs, lm.rings_dependencies)
desi_schema = _prebuilt("desi", lm.desi_pairs, lm.desi_dependencies)
#: the tree zoobot's released encoders were pretrained on
gz_evo_v1_schema = _prebuilt("gz_evo_v1", lm.gz_evo_v1_pairs, lm.gz_evo_v1_dependencies)
gz_evo_v1_public_schema = _prebuilt("gz_evo_v1_public", lm.gz_evo_v1_public_pairs, lm.gz_evo_v1_public_dependencies)
gz_ukidss_schema = _prebuilt("gz_ukidss", lm.ukidss_ortho_pairs, lm.ukidss_ortho_dependencies)
gz_jwst_schema = _prebuilt("gz_jwst", lm.jwst_ortho_pairs, lm.jwst_ortho_dependencies)  # JWST CEERS
euclid_ortho_schema = _prebuilt("euclid_ortho", lm.euclid_ortho_pairs, lm.euclid_ortho_dependencies)
euclid_schema = _prebuilt("euclid", lm.euclid_pairs, lm.euclid_dependencies)

# every other tree that has a dependencies dict [ours]
decals_dr12_ortho_schema = _prebuilt("decals_dr12_ortho", lm.decals_dr12_ortho_pairs, lm.decals_ortho_dependencies)
gz_hubble_v2_ortho_schema = _prebuilt(
    "gz_hubble_v2_ortho", lm.hubble_v2_ortho_pairs, lm.hubble_v2_ortho_dependencies
)
gz_jwst_cosmos_schema = _prebuilt(
    "gz_jwst_cosmos", lm.jwst_cosmos_ortho_pairs, lm.jwst_cosmos_ortho_dependencies
)
gz_evo_v2_schema = _prebuilt("gz_evo_v2", lm.gz_evo_v2_pairs, lm.gz_evo_v2_dependencies)
gz_evo_v2_public_schema = _prebuilt("gz_evo_v2_public", lm.gz_evo_v2_public_pairs, lm.gz_evo_v2_public_dependencies)
gz2_partial_ortho_schema = _prebuilt("gz2_partial_ortho", lm.gz2_partial_ortho_pairs, lm.gz2_ortho_dependencies)

# the old non-suffixed trees of zoobot releases before November 2022 (simplified tree: gz2_and_decals_dependencies)
decals_schema = _prebuilt("decals", lm.decals_pairs, lm.gz2_and_decals_dependencies)
decals_dr8_only_schema = _prebuilt("decals_dr8_only", lm.decals_dr8_only_pairs, lm.gz2_and_decals_dependencies)
decals_dr12_schema = _prebuilt("decals_dr12", lm.decals_dr12_pairs, lm.gz2_and_decals_dependencies)
decals_dr12_only_schema = _prebuilt("decals_dr12_only", lm.decals_dr12_only_pairs, lm.gz2_and_decals_dependencies)
decals_all_campaigns_schema = _prebuilt(
    "decals_all_campaigns", lm.decals_all_campaigns_pairs, lm.gz2_and_decals_dependencies
)
gz2_schema = _prebuilt("gz2", lm.gz2_pairs, lm.gz2_and_decals_dependencies)
gz2_partial_schema = _prebuilt("gz2_partial", lm.gz2_partial_pairs, lm.gz2_and_decals_dependencies)

del lm


def list_schemas() -> list:
    """Names of the prebuilt schemas, in definition order.

    Each name ``n`` works with :func:`get_schema` and is the module attribute ``n + '_schema'``.

    Examples
    --------
    >>> 'decals_dr5_ortho' in list_schemas()
    True
    """
    return list(_PREBUILT)


def get_schema(name: str) -> Schema:
    """A prebuilt schema by name, with or without the ``_schema`` ending.

    Parameters
    ----------
    name : str
        For example ``'decals_dr5_ortho'`` or ``'decals_dr5_ortho_schema'``; see :func:`list_schemas`.

    Returns
    -------
    Schema
        The module's instance (not a copy).

    Raises
    ------
    ValueError
        (E13) For an unknown name; the message lists the accepted names.

    Examples
    --------
    >>> get_schema('gz_rings_schema') is gz_rings_schema
    True
    """
    if isinstance(name, str):
        key = name[: -len("_schema")] if name.endswith("_schema") else name
        if key in _PREBUILT:
            return _PREBUILT[key]
    raise unknown_option_error("schema name", name, list_schemas())
