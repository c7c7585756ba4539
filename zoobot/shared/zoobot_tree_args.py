"""What both backends' ``ZoobotTree`` (and losses) check: the decision tree description and the model keywords.

Framework-free, written once: :func:`validate_question_index_groups` checks the inclusive ``(first, last)``
answer columns of each question; :func:`resolve_tree_description` turns the accepted descriptions (a
schema, question-answer pairs + dependencies, or upstream v1 index groups) into one;
:func:`check_output_dim` (E10); :func:`check_channels` (E7); :func:`check_model_keywords` (JSON-only encoder keywords, AdamW settings);
:func:`campaign_questions` groups the questions of "ortho" trees by campaign. See docs/components/training.md.
"""
from __future__ import annotations

from zoobot.shared.validation import is_int

__all__ = [
    "CAMPAIGN_SUFFIXES",
    "validate_question_index_groups",
    "answer_to_question_index",
    "resolve_tree_description",
    "check_output_dim",
    "check_channels",
    "check_model_keywords",
    "campaign_questions",
]

#: Campaign suffixes of the "ortho" decision trees (question names end with -<suffix>).
CAMPAIGN_SUFFIXES = ("dr12", "dr5", "dr8", "gz2", "hubble", "candels", "cd", "ukidss", "jwst", "euclid")


def _check_pair(i: int, group) -> tuple[int, int]:
    try:
        start, end = group
    except (TypeError, ValueError):
        raise TypeError(f"question_index_groups[{i}] must be a (start, end) pair of ints, got {group!r}") from None
    if not (is_int(start) and is_int(end)):
        raise TypeError(f"question_index_groups[{i}] must hold ints, got {group!r}")
    start, end = int(start), int(end)
    if start < 0 or start > end:
        raise ValueError(
            f"question_index_groups[{i}] = {group!r}: need 0 <= start <= end (both inclusive answer indices)"
        )
    return start, end


def validate_question_index_groups(question_index_groups) -> list[tuple[int, int]]:
    """Check and normalise ``question_index_groups`` (inclusive ``(start, end)`` answer indices per question).

    Parameters
    ----------
    question_index_groups : sequence of (int, int)
        One ``(first answer column, last answer column)`` pair per question, e.g.
        ``schema.question_index_groups``.

    Returns
    -------
    list of tuple of int

    Raises
    ------
    TypeError
        If the groups are not a sequence of integer pairs.
    ValueError
        If it is empty, a start is negative or after its end, or groups are not ascending and
        non-overlapping.

    Examples
    --------
    >>> validate_question_index_groups([[0, 2], (3, 4)])
    [(0, 2), (3, 4)]
    """
    if isinstance(question_index_groups, (str, bytes)) or not hasattr(question_index_groups, "__iter__"):
        raise TypeError(
            "question_index_groups must be a list of (start, end) answer-index pairs, e.g. "
            f"schema.question_index_groups; got {question_index_groups!r}"
        )
    groups: list[tuple[int, int]] = []
    for i, group in enumerate(question_index_groups):
        start, end = _check_pair(i, group)
        if groups and start <= groups[-1][1]:
            raise ValueError(
                f"question_index_groups must be ascending and non-overlapping, but group {i} {group!r} starts at or "
                f"before the end of group {i - 1} {groups[-1]!r}"
            )
        groups.append((start, end))
    if not groups:
        raise ValueError("question_index_groups is empty: need at least one (start, end) question group")
    return groups


def answer_to_question_index(groups) -> tuple[list[int], list[int]]:
    """The answer columns the groups use, and the question each belongs to.

    Examples
    --------
    >>> answer_to_question_index([(0, 1), (3, 4)])
    ([0, 1, 3, 4], [0, 0, 1, 1])
    """
    columns, owners = [], []
    for q, (start, end) in enumerate(groups):
        columns.extend(range(start, end + 1))
        owners.extend([q] * (end - start + 1))
    return columns, owners


def resolve_tree_description(question_answer_pairs, dependencies, schema, question_index_groups):
    """``(schema or None, question_index_groups, question names)`` from exactly one description of the tree.

    ``question_answer_pairs`` + ``dependencies``, ``schema`` (a Schema, its ``to_dict()`` or a prebuilt
    schema name), or upstream v1 ``question_index_groups`` (questions then named ``question_{i}``).

    Examples
    --------
    >>> resolve_tree_description(None, None, None, [(0, 1), (2, 4)])
    (None, [(0, 1), (2, 4)], ['question_0', 'question_1'])
    """
    from zoobot.shared import schemas

    sources = [name for name, given in (
        ("question_answer_pairs/dependencies", question_answer_pairs is not None or dependencies is not None),
        ("schema", schema is not None),
        ("question_index_groups", question_index_groups is not None),
    ) if given]
    if len(sources) != 1:
        raise ValueError(
            "ZoobotTree needs exactly one description of the decision tree: question_answer_pairs and "
            "dependencies, or schema=, or question_index_groups= (upstream v1); "
            f"got {'none' if not sources else ' and '.join(sources)}."
        )
    if question_index_groups is not None:
        groups = validate_question_index_groups(question_index_groups)
        return None, groups, [f"question_{i}" for i in range(len(groups))]
    if schema is None:
        if question_answer_pairs is None or dependencies is None:
            raise ValueError("ZoobotTree needs both question_answer_pairs and dependencies (or schema=).")
        schema = schemas.Schema(question_answer_pairs, dependencies)
    elif isinstance(schema, dict):
        schema = schemas.Schema.from_dict(schema)
    elif isinstance(schema, str):
        schema = schemas.get_schema(schema)
    elif not isinstance(schema, schemas.Schema):
        raise TypeError(f"schema must be a zoobot Schema (or its to_dict()), got {type(schema).__name__}")
    groups = [tuple(int(i) for i in g) for g in schema.question_index_groups]
    return schema, groups, [q.text for q in schema.questions]


def check_output_dim(output_dim, schema, groups) -> int:
    """E10 unless ``output_dim`` is the number of answers of the tree (``groups[-1][1] + 1``).

    Examples
    --------
    >>> check_output_dim(5, None, [(0, 1), (2, 4)])
    5
    """
    expected = groups[-1][1] + 1
    if not is_int(output_dim) or output_dim != expected:
        tree = f"schema {schema.name!r}" if schema is not None and schema.name else (
            "the schema" if schema is not None else "question_index_groups")
        raise ValueError(
            f"output_dim={output_dim!r} but {tree} has {expected} answers: the model must predict one "
            f"concentration per answer. Use output_dim={expected} (schema.n_answers)."
        )
    return int(output_dim)


def check_channels(channels) -> int:
    """Return ``channels`` as an int if it is 1 (greyscale) or 3 (RGB), else raise E7.

    Examples
    --------
    >>> check_channels(3)
    3
    """
    from zoobot.shared.errors import ChannelMismatchError

    if not is_int(channels) or int(channels) not in (1, 3):
        raise ChannelMismatchError(
            f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}. "
            "Fix: channels=1 for greyscale images (greyscale=True / color=False), channels=3 for colour."
        )
    return int(channels)


def check_model_keywords(timm_kwargs, betas, learning_rate, weight_decay, *, why: str) -> dict:
    """``timm_kwargs`` as a dict of JSON values (else ``TypeError`` saying ``why``), after checking the AdamW settings.

    Examples
    --------
    >>> check_model_keywords(None, (0.9, 0.999), 1e-3, 0.01, why='checkpoints store them')
    {}
    """
    import json

    from zoobot.shared.validation import check_number

    timm_kwargs = dict(timm_kwargs or {})
    try:
        json.dumps(timm_kwargs)
    except TypeError:
        raise TypeError(
            f"timm_kwargs must hold JSON values only (numbers, strings, lists, dicts) so that {why}; "
            f"got {timm_kwargs!r}"
        ) from None
    if len(tuple(betas)) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    check_number("learning_rate", learning_rate, minimum=0)
    check_number("weight_decay", weight_decay, minimum=0)
    return timm_kwargs


def campaign_questions(question_names) -> dict[str, list[int]]:
    """Question indices per campaign suffix, for ortho trees (every question ends with -<campaign>), else {}.

    Examples
    --------
    >>> campaign_questions(['smooth-dr5', 'bar-dr5', 'smooth-gz2'])
    {'dr5': [0, 1], 'gz2': [2]}
    """
    suffixes = [name.rsplit("-", 1)[-1] if "-" in name else None for name in question_names]
    if not all(s in CAMPAIGN_SUFFIXES for s in suffixes):
        return {}
    out: dict[str, list[int]] = {}
    for i, suffix in enumerate(suffixes):
        out.setdefault(suffix, []).append(i)
    return out
