"""The framework-free checks both backends' ZoobotTree and losses share (zoobot.shared.zoobot_tree_args), and the
deprecation helpers of the _compat modules (zoobot.shared.deprecation)."""
import doctest
import sys
import warnings

import pytest

from zoobot.shared import deprecation, schemas, zoobot_tree_args
from zoobot.shared.errors import ChannelMismatchError


@pytest.mark.parametrize("module", [zoobot_tree_args, deprecation])
def test_examples_run(module):
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0


def test_tree_description_needs_exactly_one_source():
    schema = schemas.gz_rings_schema
    resolved, groups, names = zoobot_tree_args.resolve_tree_description(None, None, schema.name, None)
    assert resolved.name == schema.name and groups == [tuple(g) for g in schema.question_index_groups]
    with pytest.raises(ValueError, match="exactly one description .* got schema and question_index_groups"):
        zoobot_tree_args.resolve_tree_description(None, None, schema, [(0, 1)])
    with pytest.raises(ValueError, match=r"output_dim=3 but schema 'gz_rings' has 2 answers"):
        zoobot_tree_args.check_output_dim(3, resolved, groups)


@pytest.mark.parametrize("groups, error, match", [
    ([(0, True)], TypeError, "must hold ints"),
    ([(2, 1)], ValueError, "need 0 <= start <= end"),
    ([(0, 2), (2, 3)], ValueError, "ascending and non-overlapping"),
    ([], ValueError, "is empty"),
    ("0,1", TypeError, "list of \\(start, end\\)"),
])
def test_bad_question_index_groups(groups, error, match):
    with pytest.raises(error, match=match):
        zoobot_tree_args.validate_question_index_groups(groups)


def test_model_keywords_and_channels():
    with pytest.raises(TypeError, match="JSON values only .* so that files record them"):
        zoobot_tree_args.check_model_keywords({"act": object()}, (0.9, 0.99), 1e-3, 0.0, why="files record them")
    with pytest.raises(ValueError, match="betas must be a pair"):
        zoobot_tree_args.check_model_keywords(None, (0.9,), 1e-3, 0.0, why="x")
    with pytest.raises(TypeError, match="learning_rate must be a number, got bool"):
        zoobot_tree_args.check_model_keywords(None, (0.9, 0.99), True, 0.0, why="x")
    with pytest.raises(ChannelMismatchError, match="channels must be 1 .* or 3"):
        zoobot_tree_args.check_channels(2)


def test_deprecated_alias_warns_at_the_callers_line_and_alias_module_gives_the_same_object():
    old = deprecation.deprecated_alias(sorted, "mod.old_sorted", "sorted")
    with pytest.warns(DeprecationWarning, match=r"mod\.old_sorted is deprecated: use sorted") as caught:
        assert old([2, 1]) == [1, 2]
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = deprecation.alias_module("zoobot_test_alias_of_doctest", "doctest")
    assert module is doctest and sys.modules.pop("zoobot_test_alias_of_doctest") is doctest
