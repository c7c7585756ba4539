"""zoobot.shared.console: progress lines for log files, the epoch line, and the dependency-noise filters."""
import io
import logging
import os
import subprocess
import sys
import textwrap
import warnings

from zoobot.shared import console


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_file_is_one_line_per_ten_percent():
    out = io.StringIO()
    with console.progress_bar(total=200, desc="Predicting", unit="galaxy", file=out) as bar:
        for _ in range(50):
            bar.update(4)
    lines = out.getvalue().splitlines()
    assert lines == [f"Predicting: {20 * i}/200 galaxy ({10 * i}%)" for i in range(1, 11)]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_progress_resumed_counts_from_initial_and_big_steps_print_once():
    out = io.StringIO()
    bar = console.progress_bar(total=100, desc="Predicting", unit="galaxy", initial=55, file=out)
    bar.update(45)
    assert out.getvalue().splitlines() == ["Predicting: 100/100 galaxy (100%)"]


def test_progress_on_a_terminal_is_tqdm_and_disabled_prints_nothing():
    from tqdm import tqdm

    assert isinstance(console.progress_bar(total=3, desc="x", file=_Terminal()), tqdm)
    out = io.StringIO()
    bar = console.progress_bar(total=3, desc="x", file=out, disable=True)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""


def test_epoch_line_formats_numbers_and_skips_non_numbers():
    line = console.format_epoch_line(2, 5, {"loss": 0.123456, "lr": 3e-5, "tag": "x", "val_loss": 12.0}, 1.26)
    assert line == "Epoch 3/5: loss 0.1235, lr 3e-05, val_loss 12.0000 (1.3 s)"
    assert console.format_epoch_line(0, None, {}) == "Epoch 1: "


def test_lightning_start_up_lines_are_dropped_unless_zoobot_logs_debug():
    console.quiet_dependencies()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    rank_zero.addHandler(handler)
    old_level, rank_zero.level = rank_zero.level, logging.INFO
    zoobot_logger = logging.getLogger("zoobot")
    old_zoobot = zoobot_logger.level
    try:
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("Restoring states from the checkpoint path at x.ckpt")
        assert [r.getMessage() for r in records] == ["Restoring states from the checkpoint path at x.ckpt"]
        zoobot_logger.setLevel(logging.DEBUG)
        rank_zero.info("GPU available: False, used: False")
        assert len(records) == 2
    finally:
        rank_zero.removeHandler(handler)
        rank_zero.setLevel(old_level)
        zoobot_logger.setLevel(old_zoobot)


def test_only_the_named_dependency_warning_is_ignored():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_dependencies()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_native_start_up_lines_are_hidden_and_other_stderr_passes():
    # file descriptor 2 of a child process: what C++ libraries write, as TensorFlow 2.21 does on import
    script = textwrap.dedent("""
        import os, sys
        from zoobot.shared.console import quiet_native_startup
        with quiet_native_startup():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\\n")
            os.write(2, b"a real problem\\n")
        print("after", file=sys.stderr)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("ZOOBOT_SHOW_NATIVE_LOGS", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["a real problem", "after"]
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                           env={**env, "ZOOBOT_SHOW_NATIVE_LOGS": "1"})
    assert "oneDNN custom operations" in shown.stderr
