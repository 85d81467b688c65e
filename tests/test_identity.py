"""The default pc_id: stable per machine and instance name."""
from __future__ import annotations

from octohub_sync.identity import machine_pc_id


def test_pc_id_stable_and_distinct_per_instance() -> None:
    a = machine_pc_id(hostname="h1", mac="001122334455")
    assert a == machine_pc_id(hostname="h1", mac="001122334455")
    assert a.startswith("node_") and len(a) == 17 and int(a[5:], 16) >= 0
    assert a != machine_pc_id(hostname="h2", mac="001122334455")
    assert a != machine_pc_id("worker2", hostname="h1", mac="001122334455")
    assert machine_pc_id() == machine_pc_id()  # this machine, two "starts"
