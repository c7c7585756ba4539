"""The zoobot error catalogue, re-exported for the PyTorch backend (same objects as :mod:`zoobot.shared.errors`)."""
from zoobot.shared.errors import *  # noqa: F401,F403
from zoobot.shared.errors import __all__  # noqa: F401
