"""The decision-tree dicts of ``zoobot.shared.label_metadata`` against an independent record.

The reference is ``tests/data/decision_trees_reference.json``: for each upstream pairs dict, its
questions, answers (in order), the parent recorded for each question, counts, and notes naming the
extra (ignored) keys of the shared dependencies dicts. ``label_metadata`` never reads that file.
"""
import ast
import inspect
import json
import pathlib
import re

import pytest

from zoobot.shared import label_metadata

REFERENCE_PATH = pathlib.Path(__file__).parents[1] / "data" / "decision_trees_reference.json"
REFERENCE = json.loads(REFERENCE_PATH.read_text())
WITH_DEPENDENCIES = [name for name, entry in REFERENCE.items() if entry["dependencies_name"]]


def _extra_keys_noted(entry):
    """The extra dependency keys that the reference notes list for this pairs dict (empty if none)."""
    for note in entry["notes"]:
        match = re.search(r"has \d+ extra key\(s\) not in these pairs.*?: (\[.*\])", note)
        if match:
            return set(ast.literal_eval(match.group(1)))
    return set()


def test_reference_has_the_32_documented_pairs_dicts():
    assert len(REFERENCE) == 32


def test_module_defines_exactly_the_reference_pairs_dicts():
    defined = {name for name in vars(label_metadata) if name.endswith("_pairs") and not name.startswith("_")}
    assert defined == set(REFERENCE)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_pairs_match_reference_in_order(name):
    entry = REFERENCE[name]
    pairs = getattr(label_metadata, name)
    expected = [(q["question"], q["answers"]) for q in entry["questions"]]
    assert list(pairs.items()) == expected
    assert len(pairs) == entry["n_questions"]
    assert sum(len(answers) for answers in pairs.values()) == entry["n_answers"]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_questions_and_label_cols_lists(name):
    entry = REFERENCE[name]
    stem = name[: -len("_pairs")]
    questions = getattr(label_metadata, f"{stem}_questions")
    label_cols = getattr(label_metadata, f"{stem}_label_cols")
    assert questions == [q["question"] for q in entry["questions"]]
    assert label_cols == [q["question"] + a for q in entry["questions"] for a in q["answers"]]
    assert len(label_cols) == entry["n_answers"]


@pytest.mark.parametrize("name", WITH_DEPENDENCIES)
def test_dependencies_match_reference(name):
    entry = REFERENCE[name]
    dependencies = getattr(label_metadata, entry["dependencies_name"])
    for question in entry["questions"]:
        assert question["question"] in dependencies, question["question"]
        assert dependencies[question["question"]] == question["asked_after"], question["question"]
    # the extra (ignored) keys are exactly those the reference records
    extra = set(dependencies) - {q["question"] for q in entry["questions"]}
    assert extra == _extra_keys_noted(entry)


@pytest.mark.parametrize("name", [n for n in REFERENCE if not REFERENCE[n]["dependencies_name"]])
def test_no_dependencies_invented_where_upstream_has_none(name):
    stem = name[: -len("_pairs")]
    assert not hasattr(label_metadata, f"{stem}_dependencies")


def test_every_dependencies_dict_is_documented():
    defined = {n for n in vars(label_metadata) if n.endswith("_dependencies") and not n.startswith("_")}
    documented = {entry["dependencies_name"] for entry in REFERENCE.values() if entry["dependencies_name"]}
    assert defined == documented | {"gz2_dependencies"}


def test_dependency_values_of_extra_keys_name_their_own_campaign():
    # values of ignored keys are still well-formed label columns of the same campaign
    for name in ["gz2_ortho_dependencies", "ukidss_ortho_dependencies", "hubble_ortho_dependencies",
                 "hubble_v2_ortho_dependencies"]:
        dependencies = getattr(label_metadata, name)
        suffix = "-" + name.split("_")[0]
        for question, parent in dependencies.items():
            assert question.endswith(suffix)
            assert parent is None or parent.split("_")[0].endswith(suffix)


def test_seed_gz2_dependencies_as_documented():
    # api.md 1.1, written out by hand
    featured = "smooth-or-featured_featured-or-disk"
    assert label_metadata.gz2_dependencies == {
        "smooth-or-featured": None,
        "disk-edge-on": featured,
        "has-spiral-arms": featured,
        "bar": featured,
        "bulge-size": featured,
        "something-odd": None,
        "how-rounded": "smooth-or-featured_smooth",
        "bulge-shape": "disk-edge-on_yes",
        "spiral-winding": "has-spiral-arms_yes",
        "spiral-arm-count": "has-spiral-arms_yes",
    }
    assert list(label_metadata.gz2_dependencies) == list(label_metadata.gz2_pairs)


def test_seed_gz2_and_decals_dependencies_has_dr12_keys():
    deps = label_metadata.gz2_and_decals_dependencies
    assert deps["edge-on-bulge"] == "disk-edge-on_yes"
    assert deps["merging"] is None
    assert deps["bar-dr12"] == deps["bulge-size-dr12"] == "smooth-or-featured_featured-or-disk"
    assert deps["how-rounded-dr12"] == "smooth-or-featured_smooth"
    assert deps["spiral-arm-count-dr12"] == "has-spiral-arms_yes"
    assert deps["merging-dr12"] is None


def test_jwst_is_the_ceers_tree_not_the_renamed_cosmic_dawn():
    pairs = label_metadata.jwst_ortho_pairs
    assert (len(pairs), sum(map(len, pairs.values()))) == (12, 39)
    assert "artifact-jwst" not in pairs
    assert pairs["smooth-or-featured-jwst"][2] == "_star-artifact-zoom"
    assert label_metadata.jwst_ortho_dependencies["clumps-jwst"] is None


def test_candels_merging_answer_order_differs_from_dr12():
    assert label_metadata.candels_ortho_pairs["merging-candels"] == ["_merger", "_tidal-debris", "_both", "_neither"]
    assert label_metadata.decals_dr12_ortho_pairs["merging-dr12"] == ["_neither", "_tidal-debris", "_both", "_merger"]


def test_merged_trees_follow_campaign_order():
    lm = label_metadata
    assert list(lm.decals_all_campaigns_ortho_pairs) == (
        list(lm.decals_dr12_ortho_pairs) + list(lm.decals_dr5_ortho_pairs) + list(lm.decals_dr8_ortho_pairs)
    )
    assert list(lm.gz_evo_v2_pairs) == (
        list(lm.decals_all_campaigns_ortho_pairs) + list(lm.gz2_ortho_pairs) + list(lm.candels_ortho_pairs)
        + list(lm.hubble_v2_ortho_pairs) + list(lm.cosmic_dawn_ortho_pairs) + list(lm.euclid_ortho_pairs)
    )


def test_module_does_not_read_the_reference():
    source = inspect.getsource(label_metadata)
    assert "import json" not in source
    assert "decision_trees" not in source


def test_label_metadata_dicts_are_independent_copies():
    # mutating one tree must not change another built from the same base
    lm = label_metadata
    assert lm.decals_dr5_ortho_pairs["bar-dr5"] is not lm.decals_dr8_ortho_pairs["bar-dr8"]
    assert lm.desi_pairs["bar"] is not lm.decals_pairs["bar"]
    assert lm.gz_evo_v1_pairs["bar-gz2"] is not lm.gz2_ortho_pairs["bar-gz2"]


def test_extract_questions_and_label_cols_by_hand():
    pairs = {"q-one": ["_a", "_b"], "q-two": ["_c", "_d", "_e"]}
    questions, label_cols = label_metadata.extract_questions_and_label_cols(pairs)
    assert questions == ["q-one", "q-two"]
    assert label_cols == ["q-one_a", "q-one_b", "q-two_c", "q-two_d", "q-two_e"]


def test_change_suffix_renames_questions_and_parents():
    pairs = {"a-cd": ["_x", "_y"], "b-cd": ["_u", "_v"]}
    dependencies = {"a-cd": None, "b-cd": "a-cd_x", "c-dr5": "z-dr5_q"}
    new_pairs, new_dependencies = label_metadata.change_suffix(pairs, dependencies, "-cd", "-jwst")
    assert list(new_pairs.items()) == [("a-jwst", ["_x", "_y"]), ("b-jwst", ["_u", "_v"])]
    # the other campaign's key is left out
    assert new_dependencies == {"a-jwst": None, "b-jwst": "a-jwst_x"}
    # inputs untouched
    assert list(pairs) == ["a-cd", "b-cd"] and "c-dr5" in dependencies


def test_change_suffix_adds_and_strips():
    lm = label_metadata
    added, added_deps = lm.change_suffix(lm.cosmic_dawn_pairs, lm.cosmic_dawn_dependencies, "", "-cd")
    assert added == lm.cosmic_dawn_ortho_pairs and added_deps == lm.cosmic_dawn_ortho_dependencies
    stripped, stripped_deps = lm.change_suffix(lm.decals_dr8_ortho_pairs, lm.decals_ortho_dependencies, "-dr8", "")
    assert stripped == lm.desi_pairs and stripped_deps == lm.desi_dependencies


def test_change_suffix_rejects_questions_without_the_old_suffix():
    with pytest.raises(ValueError, match=r"\['ring'\] do not end with old_suffix '-cd'"):
        label_metadata.change_suffix({"ring": ["_yes", "_no"]}, {}, "-cd", "-jwst")
