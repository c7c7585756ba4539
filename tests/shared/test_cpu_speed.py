"""The warning for GPU-sized settings on a CPU (issue 17): the scaling, the message, and that tiny settings are
never timed. The backends' probes and the warning from train() are tested in tests/pytorch/test_train.py and
tests/tensorflow/test_train.py."""
import warnings

import pytest

from zoobot.shared import cpu_speed


def test_estimate_scales_the_probe_linearly_by_hand():
    # 0.5 s for 2 images -> 0.25 s an image; 256 a batch -> 64 s; 1000 images an epoch -> 250 s
    assert cpu_speed.estimate_cpu_time(0.5, 2, batch_size=256, n_train=1000, epochs=3) == {
        "batch": 64.0, "epoch": 250.0, "run": 750.0, "epochs": 3}
    # a training set smaller than a batch: the one batch holds the 26 images
    assert cpu_speed.estimate_cpu_time(0.5, 2, batch_size=256, n_train=26, epochs=3)["batch"] == 6.5


@pytest.mark.parametrize("estimate, fires", [
    ({"batch": 9.0, "epoch": 90.0, "run": 7000.0, "epochs": 78}, False),  # under both thresholds
    ({"batch": 11.0, "epoch": 11.0, "run": 11.0, "epochs": 1}, True),  # one slow batch
    ({"batch": 0.1, "epoch": 100.0, "run": 7300.0, "epochs": 73}, True),  # a long run of fast batches
])
def test_message_fires_on_slow_batches_or_long_runs(estimate, fires):
    message = cpu_speed.slow_cpu_message(estimate, "efficientnet_b0", 224, 256)
    assert (message is not None) == fires
    if fires:
        assert "\n" not in message and "per batch" in message and "per epoch" in message
        assert "tiny_cnn" in message and "--resize-size" in message and "--batch-size" in message and "GPU" in message


def test_tiny_settings_are_never_timed():
    def probe(n):
        raise AssertionError("tiny settings must not be timed")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_speed.warn_if_gpu_sized(probe, architecture_name="tiny_cnn", image_size=32, batch_size=16,
                                           n_train=10_000, epochs=1000) is None


def test_gpu_sized_settings_warn_once_with_the_estimate():
    calls = []

    def probe(n):
        calls.append(n)
        return 1.0  # 2 images a second: 256 in 128 s; 1000 images = 500 s an epoch; 100 epochs = 13.9 h

    with pytest.warns(UserWarning, match=r"efficientnet_b0 at 224 px and batch_size=256: about 2 min per batch, "
                                         r"8 min per epoch, 13.9 h for 100 epochs") as record:
        cpu_speed.warn_if_gpu_sized(probe, architecture_name="efficientnet_b0", image_size=224, batch_size=256,
                                    n_train=1000, epochs=100)
    assert calls == [cpu_speed.PROBE_IMAGES] and len(record) == 1


@pytest.mark.parametrize("seconds, text", [(59, "59 s"), (600, "10 min"), (5 * 3600, "5.0 h"), (10 * 86400, "10 days")])
def test_durations_read_naturally(seconds, text):
    assert cpu_speed._duration(seconds) == text
