"""``python -m zoobot``: the same command line as the ``zoobot`` script (see :mod:`zoobot.cli`)."""
from zoobot.cli import main

if __name__ == "__main__":
    main()
