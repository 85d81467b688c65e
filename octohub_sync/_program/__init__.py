"""The program's parts (``octohub-node``, ``run_node.py``): exit codes, stop signals, ``--demo`` and
``--check``. A library never loads them."""
