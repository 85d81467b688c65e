"""``python -m octohub_sync``: the same program as ``octohub-node`` and ``run_node.py``."""
import sys

from .cli import main

sys.exit(main())
