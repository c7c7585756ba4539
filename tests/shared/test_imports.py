"""``import zoobot`` and every ``zoobot.shared`` module must not import a deep-learning framework.

Runs in a fresh interpreter (this test process may already have imported torch or tensorflow).
Modules (and sub-packages such as ``zoobot.shared.synthetic``) are discovered at test time, so new
files in ``zoobot/shared`` are covered automatically.
"""
import json
import pkgutil
import subprocess
import sys

import zoobot.shared

FRAMEWORKS = ("torch", "tensorflow", "keras")

SCRIPT = """
import importlib, json, pkgutil, sys
import zoobot, zoobot.shared
def fail(name):
    raise ImportError('could not import ' + name)
names = sorted(m.name for m in pkgutil.walk_packages(zoobot.shared.__path__, 'zoobot.shared.', onerror=fail))
for name in names:
    importlib.import_module(name)
frameworks = {frameworks!r}
loaded = sorted(m for m in sys.modules if m.split('.')[0] in frameworks)
print(json.dumps({{'modules': names, 'frameworks': loaded}}))
"""


def run_import_script(frameworks):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(frameworks=tuple(frameworks))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_shared_modules_import_no_framework():
    top_level = {"zoobot.shared." + m.name for m in pkgutil.iter_modules(zoobot.shared.__path__)}
    assert {"zoobot.shared.label_metadata", "zoobot.shared.schemas", "zoobot.shared.errors"} <= top_level

    report = run_import_script(FRAMEWORKS)
    assert top_level <= set(report["modules"])
    assert report["frameworks"] == [], f"framework modules imported by zoobot.shared: {report['frameworks'][:10]}"


def test_import_check_detects_a_loaded_package():
    # the same script does see a package that zoobot.shared does import
    report = run_import_script(["numpy"])
    assert "numpy" in report["frameworks"]
