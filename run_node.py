#!/usr/bin/env python3
"""Run an OctoHub node: ``python run_node.py`` (``--demo`` for a self-contained try-out, ``--help``)."""
import sys

if __name__ == "__main__":
    # Imported here, not above: a child process of an isolated handler (spawn) runs this file again
    # as __mp_main__, and need not import the whole node to run one handler.
    from octohub_sync.cli import main

    sys.exit(main())
