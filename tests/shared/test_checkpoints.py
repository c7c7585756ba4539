"""Version stamps and the checks made when loading a checkpoint."""
import pytest

import zoobot
from zoobot.shared.checkpoints import check_format_version, drop_unknown_hparams, version_metadata
from zoobot.shared.errors import CheckpointVersionError


def test_version_metadata_is_the_installed_version():
    assert version_metadata() == {"zoobot_version": zoobot.__version__, "format_version": zoobot.FORMAT_VERSION}
    assert isinstance(version_metadata()["format_version"], int)


def test_same_version_is_silent(recwarn):
    check_format_version(version_metadata(), "model.ckpt")
    assert len(recwarn) == 0


def test_newer_format_raises_e11_naming_path_and_both_versions(tmp_path):
    path = tmp_path / "future.ckpt"
    newer = {"zoobot_version": "9.0.0", "format_version": zoobot.FORMAT_VERSION + 1}
    with pytest.raises(CheckpointVersionError) as info:
        check_format_version(newer, path)
    message = str(info.value)
    assert str(path) in message
    assert "9.0.0" in message and f"format_version {zoobot.FORMAT_VERSION + 1}" in message
    assert zoobot.__version__ in message and f"format_version {zoobot.FORMAT_VERSION})" in message


def test_older_or_missing_format_warns_and_continues():
    with pytest.warns(UserWarning, match=r"old\.ckpt was written by zoobot 0\.0\.1 with format_version 0, older"):
        check_format_version({"zoobot_version": "0.0.1", "format_version": 0}, "old.ckpt")
    with pytest.warns(UserWarning, match="records no format_version"):
        check_format_version({}, "upstream.ckpt")


def test_non_integer_format_is_e11():
    with pytest.raises(CheckpointVersionError, match=r"format_version='x'.*not an integer"):
        check_format_version({"format_version": "x"}, "bad.ckpt")


def test_drop_unknown_hparams_warns_and_keeps_known():
    hparams = {"num_classes": 3, "learning_rate": 0.1, "new_thing": 1, **version_metadata()}
    with pytest.warns(UserWarning, match=r"Loading clf\.ckpt: ignoring hyperparameters .*'new_thing'"):
        kept = drop_unknown_hparams(hparams, {"num_classes", "learning_rate"}, "clf.ckpt")
    assert kept == {"num_classes": 3, "learning_rate": 0.1}


def test_drop_unknown_hparams_version_keys_only_is_silent(recwarn):
    kept = drop_unknown_hparams({"a": 1, **version_metadata()}, {"a"}, "x")
    assert kept == {"a": 1}
    assert len(recwarn) == 0
