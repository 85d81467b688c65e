"""The default pc_id: stable per machine and instance name."""
from __future__ import annotations

import re

from octohub_sync.identity import machine_pc_id


def test_pc_id_stable_and_distinct_per_instance() -> None:
    a = machine_pc_id(hostname="h1", mac="001122334455")
    assert a == machine_pc_id(hostname="h1", mac="001122334455")
    assert re.fullmatch(r"node_[0-9a-f]{12}", a), a
    assert a != machine_pc_id(hostname="h2", mac="001122334455")
    assert a != machine_pc_id("worker2", hostname="h1", mac="001122334455")
    assert machine_pc_id() == machine_pc_id()  # this machine, two "starts"


def test_without_a_mac_the_machine_id_keeps_the_pc_id_stable(tmp_path, monkeypatch) -> None:
    import uuid

    from octohub_sync import identity

    # uuid.getnode() sets the multicast bit when it invents a random number (no MAC found).
    monkeypatch.setattr(uuid, "getnode", lambda: (1 << 40) | 0x1234)
    empty, machine_id = tmp_path / "empty", tmp_path / "machine-id"
    empty.write_text("\n")
    machine_id.write_text("0123456789abcdef\n")
    monkeypatch.setattr(identity, "_MACHINE_ID_FILES", (str(tmp_path / "missing"), str(empty), str(machine_id)))
    assert identity._stable_mac() == "0123456789abcdef"
    assert machine_pc_id(hostname="h1") == machine_pc_id(hostname="h1", mac="0123456789abcdef")
    monkeypatch.setattr(identity, "_MACHINE_ID_FILES", (str(tmp_path / "missing"),))
    assert identity._stable_mac() == "no-mac"
    monkeypatch.setattr(uuid, "getnode", lambda: 0x001122334455)
    assert identity._stable_mac() == "001122334455"
