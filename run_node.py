#!/usr/bin/env python3
"""Run an OctoHub node: ``python run_node.py`` (``--demo`` for a self-contained try-out, ``--help``)."""
import sys

from octohub_sync.cli import main

if __name__ == "__main__":
    sys.exit(main())
