"""``zoobot.shared.schemas``: Schema, Question, Answer and the prebuilt schemas.

Prebuilt schemas are checked against ``tests/data/decision_trees_reference.json``; index groups
and joint probabilities against hand-computed values.
"""
import json
import pathlib

import numpy as np
import pytest

from zoobot.shared import label_metadata, schemas
from zoobot.shared.schemas import Answer, Question, Schema

REFERENCE = json.loads((pathlib.Path(__file__).parents[1] / "data" / "decision_trees_reference.json").read_text())

UPSTREAM_PREBUILT = [
    "decals_dr5_ortho_schema", "decals_dr8_ortho_schema", "decals_all_campaigns_ortho_schema", "gz2_ortho_schema",
    "gz_candels_ortho_schema", "gz_hubble_ortho_schema", "cosmic_dawn_ortho_schema", "cosmic_dawn_schema",
    "gz_rings_schema", "desi_schema", "gz_evo_v1_schema", "gz_evo_v1_public_schema", "gz_ukidss_schema",
    "gz_jwst_schema", "euclid_ortho_schema", "euclid_schema",
]
ALL_SCHEMAS = [schemas.get_schema(name) for name in schemas.list_schemas()]
IDS = schemas.list_schemas()


# a small tree: a (root) -> b after a_x -> c after b_v; d always asked
SMALL_PAIRS = {"a": ["_x", "_y"], "b": ["_u", "_v"], "c": ["_p", "_q", "_r"], "d": ["_s", "_t"]}
SMALL_DEPENDENCIES = {"a": None, "b": "a_x", "c": "b_v", "d": None}


def small_schema(**kwargs):
    return Schema(SMALL_PAIRS, SMALL_DEPENDENCIES, **kwargs)


# ---------------------------------------------------------------------------------------------
# prebuilt schemas against the reference
# ---------------------------------------------------------------------------------------------

def test_upstream_prebuilt_schemas_come_first_in_order():
    assert [n + "_schema" for n in schemas.list_schemas()[:16]] == UPSTREAM_PREBUILT


def test_required_extra_prebuilt_schemas_exist():
    for name in ["decals_dr12_ortho_schema", "gz_rings_schema", "desi_schema", "gz2_ortho_schema"]:
        assert isinstance(getattr(schemas, name), Schema)


@pytest.mark.parametrize("entry_name", [n for n, e in REFERENCE.items() if e["schema_name"]])
def test_reference_schema_names_match_content(entry_name):
    entry = REFERENCE[entry_name]
    schema = getattr(schemas, entry["schema_name"])
    _assert_schema_matches_entry(schema, entry)


@pytest.mark.parametrize("entry_name", [n for n, e in REFERENCE.items() if e["dependencies_name"]])
def test_every_tree_with_dependencies_has_a_prebuilt_schema(entry_name):
    entry = REFERENCE[entry_name]
    expected_pairs = [(q["question"], q["answers"]) for q in entry["questions"]]
    expected_parents = [q["asked_after"] for q in entry["questions"]]
    matching = [
        s for s in ALL_SCHEMAS
        if list(s.question_answer_pairs.items()) == expected_pairs
        and [None if q.asked_after is None else q.asked_after.text for q in s.questions] == expected_parents
    ]
    assert matching, f"no prebuilt schema for {entry_name}"


def _assert_schema_matches_entry(schema, entry):
    assert schema.n_questions == entry["n_questions"]
    assert schema.n_answers == entry["n_answers"]
    assert [q.text for q in schema.questions] == [q["question"] for q in entry["questions"]]
    assert schema.label_cols == [q["question"] + a for q in entry["questions"] for a in q["answers"]]
    for question, expected in zip(schema.questions, entry["questions"]):
        parent = None if question.asked_after is None else question.asked_after.text
        assert parent == expected["asked_after"], question.text


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=IDS)
def test_prebuilt_schema_names_and_attributes(schema):
    assert getattr(schemas, schema.name + "_schema") is schema
    assert schemas.get_schema(schema.name) is schema
    assert schemas.get_schema(schema.name + "_schema") is schema


# ---------------------------------------------------------------------------------------------
# label columns, index groups
# ---------------------------------------------------------------------------------------------

def test_label_cols_and_index_groups_by_hand():
    schema = small_schema()
    assert schema.label_cols == ["a_x", "a_y", "b_u", "b_v", "c_p", "c_q", "c_r", "d_s", "d_t"]
    assert schema.question_index_groups == [(0, 1), (2, 3), (4, 6), (7, 8)]
    assert (schema.n_questions, schema.n_answers) == (4, 9)


def test_decals_dr5_index_groups_by_hand():
    # answer counts 3, 2, 2, 3, 5, 3, 3, 3, 6, 4
    expected = [(0, 2), (3, 4), (5, 6), (7, 9), (10, 14), (15, 17), (18, 20), (21, 23), (24, 29), (30, 33)]
    groups = schemas.decals_dr5_ortho_schema.question_index_groups
    assert groups == expected
    assert all(type(i) is int for group in groups for i in group)


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=IDS)
def test_index_groups_are_contiguous_and_inclusive(schema):
    groups = schema.question_index_groups
    assert groups[0][0] == 0
    assert groups[-1][1] == schema.n_answers - 1
    for (_, end), (next_start, _) in zip(groups, groups[1:]):
        assert next_start == end + 1
    for question, (start, end) in zip(schema.questions, groups):
        assert schema.label_cols[start:end + 1] == [a.text for a in question.answers]
        assert (question.start_index, question.end_index) == (start, end)
        assert schema.named_index_groups[question] == (start, end)
    assert [a.index for a in schema.answers] == list(range(schema.n_answers))


# ---------------------------------------------------------------------------------------------
# questions and answers
# ---------------------------------------------------------------------------------------------

def test_question_and_answer_links():
    schema = schemas.decals_dr5_ortho_schema
    bar = schema.get_question("bar-dr5")
    assert isinstance(bar, Question)
    assert [a.text for a in bar.answers] == ["bar-dr5_strong", "bar-dr5_weak", "bar-dr5_no"]
    assert bar.asked_after is schema.get_answer("disk-edge-on-dr5_no")
    no = schema.get_answer("disk-edge-on-dr5_no")
    assert isinstance(no, Answer)
    assert no.question is schema.get_question("disk-edge-on-dr5")
    assert no.index == 4
    assert [q.text for q in no.next_questions] == ["has-spiral-arms-dr5", "bar-dr5", "bulge-size-dr5"]
    assert no.next_question is no.next_questions
    assert schema.get_answer("merging-dr5_merger").next_questions == []
    assert schema.get_question("smooth-or-featured-dr5").asked_after is None
    assert no.pretty_text == "Disk Edge On Dr5 No"


def test_get_question_unknown_suggests_close_matches():
    expected = r"'bar-dr6' is not a question of schema 'decals_dr5_ortho'.*Did you mean 'bar-dr5'"
    with pytest.raises(ValueError, match=expected):
        schemas.decals_dr5_ortho_schema.get_question("bar-dr6")


def test_get_question_with_an_answer_says_so():
    with pytest.raises(ValueError, match="That is an answer"):
        schemas.gz_rings_schema.get_question("ring_yes")


def test_get_answer_unknown_suggests_close_matches():
    with pytest.raises(ValueError, match=r"'bar-dr5_strng' is not an answer .*Did you mean 'bar-dr5_strong'"):
        schemas.decals_dr5_ortho_schema.get_answer("bar-dr5_strng")
    with pytest.raises(ValueError, match="That is a question"):
        schemas.decals_dr5_ortho_schema.get_answer("bar-dr5")


# ---------------------------------------------------------------------------------------------
# joint_p
# ---------------------------------------------------------------------------------------------

def test_joint_p_three_levels_by_hand():
    schema = small_schema()
    #                a_x  a_y  b_u   b_v  c_p  c_q  c_r  d_s  d_t
    probs = np.array([[0.6, 0.4, 0.75, 0.25, 0.3, 0.2, 0.5, 0.1, 0.9],
                      [0.9, 0.1, 0.5, 0.5, 0.4, 0.4, 0.2, 0.7, 0.3]])
    # c_r = p(c_r) * p(b_v) * p(a_x)
    np.testing.assert_allclose(schema.joint_p(probs, "c_r"), [0.5 * 0.25 * 0.6, 0.2 * 0.5 * 0.9])
    np.testing.assert_allclose(schema.joint_p(probs, "b_u"), [0.75 * 0.6, 0.5 * 0.9])
    np.testing.assert_allclose(schema.joint_p(probs, "a_y"), [0.4, 0.1])
    np.testing.assert_allclose(schema.joint_p(probs, "d_s"), [0.1, 0.7])


def test_joint_p_on_decals_tree():
    schema = schemas.decals_dr5_ortho_schema
    probs = np.full((3, schema.n_answers), 0.5)
    # spiral-winding <- has-spiral-arms_yes <- disk-edge-on_no <- featured-or-disk
    probs[:, schema.get_answer("spiral-winding-dr5_tight").index] = [0.2, 0.4, 1.0]
    probs[:, schema.get_answer("smooth-or-featured-dr5_featured-or-disk").index] = [1.0, 0.1, 0.0]
    expected = np.array([0.2 * 0.5 * 0.5 * 1.0, 0.4 * 0.5 * 0.5 * 0.1, 0.0])
    np.testing.assert_allclose(schema.joint_p(probs, "spiral-winding-dr5_tight"), expected)


def test_joint_p_width_mismatch():
    with pytest.raises(ValueError, match=r"expected width 9, got shape \(2, 8\)"):
        small_schema().joint_p(np.zeros((2, 8)), "a_x")


# ---------------------------------------------------------------------------------------------
# serialisation and equality
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=IDS)
def test_to_dict_round_trip_through_json(schema):
    restored = Schema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert restored == schema
    assert restored.name == schema.name
    assert restored.label_cols == schema.label_cols
    assert restored.question_index_groups == schema.question_index_groups
    for question, restored_question in zip(schema.questions, restored.questions):
        assert question.asked_after == restored_question.asked_after


def test_to_dict_content():
    d = small_schema(name="small").to_dict()
    assert d == {"question_answer_pairs": SMALL_PAIRS, "dependencies": SMALL_DEPENDENCIES, "name": "small"}
    assert list(d["question_answer_pairs"]) == ["a", "b", "c", "d"]


def test_from_dict_missing_keys():
    with pytest.raises(ValueError, match=r"missing key\(s\) \['dependencies'\]"):
        Schema.from_dict({"question_answer_pairs": SMALL_PAIRS})


def test_equality_is_on_content():
    base = small_schema()
    assert base == small_schema(name="other name")
    assert hash(base) == hash(small_schema(name="x"))
    # ignored extra dependency keys do not matter
    assert base == Schema(SMALL_PAIRS, {**SMALL_DEPENDENCIES, "zzz": "a_y"})
    # a different parent, answer order or question order does
    assert base != Schema(SMALL_PAIRS, {**SMALL_DEPENDENCIES, "c": "b_u"})
    assert base != Schema({**SMALL_PAIRS, "d": ["_t", "_s"]}, SMALL_DEPENDENCIES)
    reordered = {q: SMALL_PAIRS[q] for q in ["d", "a", "b", "c"]}
    assert base != Schema(reordered, SMALL_DEPENDENCIES)
    assert base != "not a schema"
    assert schemas.decals_dr5_ortho_schema != schemas.decals_dr8_ortho_schema


def test_inputs_are_copied():
    pairs = {q: list(a) for q, a in SMALL_PAIRS.items()}
    dependencies = dict(SMALL_DEPENDENCIES)
    schema = Schema(pairs, dependencies)
    pairs["a"].append("_z")
    dependencies["b"] = None
    assert schema.question_answer_pairs["a"] == ["_x", "_y"]
    assert schema.dependencies["b"] == "a_x"


def test_repr_is_short():
    assert repr(schemas.gz_evo_v1_schema) == "Schema(name='gz_evo_v1', n_questions=76, n_answers=239)"
    assert repr(small_schema()) == "Schema(n_questions=4, n_answers=9)"


def test_construction_is_silent(capsys, caplog):
    small_schema(name="quiet")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert caplog.records == []


# ---------------------------------------------------------------------------------------------
# validation (E9)
# ---------------------------------------------------------------------------------------------

def test_missing_dependencies_listed_with_hint():
    dependencies = {"a": None, "b": "a_x"}
    expected = r"'c', 'd' of this schema have no entry in dependencies.*use None if always asked"
    with pytest.raises(ValueError, match=expected):
        Schema(SMALL_PAIRS, dependencies)


def test_misspelled_dependency_key_suggested():
    pairs = label_metadata.decals_dr5_ortho_pairs
    dependencies = dict(label_metadata.decals_ortho_dependencies)
    dependencies["bar-dr-5"] = dependencies.pop("bar-dr5")
    with pytest.raises(ValueError, match=r"'bar-dr5' \(did you mean key 'bar-dr-5'\?\)"):
        Schema(pairs, dependencies, name="typo")


def test_dependency_on_unknown_answer_suggests_close_match():
    with pytest.raises(ValueError, match=r"dependencies\['c'\] = 'b_vv' is not a label column .*Did you mean 'b_v'"):
        Schema(SMALL_PAIRS, {**SMALL_DEPENDENCIES, "c": "b_vv"})


def test_dependency_on_other_campaign_is_unknown():
    # the shared DECaLS dict used with DR8 pairs, but one parent points at DR5
    dependencies = {**label_metadata.decals_ortho_dependencies, "bar-dr8": "disk-edge-on-dr5_no"}
    with pytest.raises(ValueError, match=r"Did you mean 'disk-edge-on-dr8_no'"):
        Schema(label_metadata.decals_dr8_ortho_pairs, dependencies)


def test_dependency_cycle_detected():
    with pytest.raises(ValueError, match=r"form a cycle: .*a -> b -> a|form a cycle: .*b -> a -> b"):
        Schema({"a": ["_x", "_y"], "b": ["_u", "_v"]}, {"a": "b_u", "b": "a_x"}, name="loop")


def test_longer_cycle_and_self_loop_detected():
    with pytest.raises(ValueError, match="cycle"):
        Schema(SMALL_PAIRS, {**SMALL_DEPENDENCIES, "a": "c_p"})
    with pytest.raises(ValueError, match=r"cycle: a -> a"):
        Schema({"a": ["_x", "_y"]}, {"a": "a_x"})


def test_single_question_may_omit_dependency():
    schema = Schema({"ring": ["_yes", "_no"]}, {})
    assert schema.questions[0].asked_after is None
    assert schema == schemas.gz_rings_schema


def test_bad_input_types_and_shapes():
    with pytest.raises(TypeError, match="question_answer_pairs must be a dict"):
        Schema([("a", ["_x"])], {})
    with pytest.raises(TypeError, match="dependencies must be a dict"):
        Schema(SMALL_PAIRS, None)
    with pytest.raises(TypeError, match=r"answers of 'a' must be a list"):
        Schema({"a": "_x"}, {"a": None})
    with pytest.raises(ValueError, match="has no answers"):
        Schema({"a": []}, {"a": None})
    with pytest.raises(ValueError, match="empty"):
        Schema({}, {})
    with pytest.raises(ValueError, match=r"'a_xb' appear twice"):
        Schema({"a": ["_xb"], "a_x": ["b"]}, {"a": None, "a_x": None})
    with pytest.raises(TypeError, match=r"dependencies\['b'\] must be a label column"):
        Schema(SMALL_PAIRS, {**SMALL_DEPENDENCIES, "b": 3})


# ---------------------------------------------------------------------------------------------
# get_schema / list_schemas (E13)
# ---------------------------------------------------------------------------------------------

def test_list_schemas_names():
    names = schemas.list_schemas()
    assert len(names) == len(set(names)) == 29
    assert "gz_rings" in names and "decals_dr12_ortho" in names


def test_get_schema_unknown_name():
    expected = r"Unknown schema name 'decals_dr5_orth'\. Did you mean 'decals_dr5_ortho'.*Accepted values: .*'gz_rings'"
    with pytest.raises(ValueError, match=expected):
        schemas.get_schema("decals_dr5_orth")
    with pytest.raises(ValueError, match="Unknown schema name 5"):
        schemas.get_schema(5)
