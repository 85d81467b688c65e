"""The state directory is the node's alone: created 0700, refused when others can write in it, no file written through a link."""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from octohub_sync import ConfigError
from octohub_sync.hub import LocalHub
from octohub_sync._config.identity import _stable_mac, identity_file

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(os.name != "posix", reason="mode bits and O_NOFOLLOW are POSIX's (Windows: a check)")]


def test_the_state_directory_is_created_0700_and_refused_when_others_can_write(make_node, hub: LocalHub,
                                                                               tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "state"
    old_umask = os.umask(0)  # mode 0700 is asked for, not left to the umask
    try:
        node = make_node(pc_id="node_fresh", state_dir=str(fresh))
        assert node.wait_connected(10)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    for mode, who in ((0o777, "group and others"), (0o770, "group"), (0o703, "others")):
        shared = tmp_path / f"shared-{mode:o}"
        shared.mkdir()
        shared.chmod(mode)
        node = make_node(_start=False, pc_id="node_shared", state_dir=str(shared))
        with pytest.raises(ConfigError) as refused:
            node.start()
        text = str(refused.value)
        assert text.startswith(f"OCTOHUB_STATE_DIR='{shared}'") and f"writable by {who} (mode {mode:04o})" in text
        assert "chmod 700" in text and list(shared.iterdir()) == []  # nothing written there
    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    readable.chmod(0o755)  # others may read, not write: the node's own files are 0600 anyway
    node = make_node(pc_id="node_readable", state_dir=str(readable))
    assert node.wait_connected(10)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_state_directory_of_another_user_is_refused(make_node, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 4321, 4321)
    node = make_node(_start=False, pc_id="node_theirs", state_dir=str(theirs))
    with pytest.raises(ConfigError, match=f"^OCTOHUB_STATE_DIR='{theirs}': the state directory belongs to user id 4321"):
        node.start()


@pytest.mark.parametrize("name", ["node_ln.open", "node_ln.sqlite3", "node_ln.sqlite3-wal", "node_ln.lock"])
def test_no_ledger_file_is_written_through_a_planted_link(make_node, tmp_path: Path, name: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "written-by-the-node"
    (state / name).symlink_to(target)  # dangling: whatever follows it creates the target
    node = make_node(_start=False, pc_id="node_ln", state_dir=str(state))
    with pytest.raises(ConfigError) as refused:
        node.start()
    assert f"{name} is a symbolic link" in str(refused.value) and "OCTOHUB_STATE_DIR" in str(refused.value)
    assert not target.exists()
    (state / name).unlink()
    node.start()  # the link removed, the node starts
    assert node.wait_connected(10)
    assert not target.exists()


def test_the_pc_id_file_is_never_read_or_written_through_a_link(make_node, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim.json"
    planted = json.dumps({"pc_id": "node_planted", "machine": _stable_mac()})  # this machine's: it would be taken
    victim.write_text(planted)
    path = identity_file(state)
    path.symlink_to(victim)
    # The temporary file the pc_id is written through, planted for this very process.
    target = tmp_path / "written-by-the-node"
    path.with_name(f".{path.name}.{os.getpid()}.tmp").symlink_to(target)
    node = make_node(pc_id=None, state_dir=str(state))
    assert node.pc_id != "node_planted"  # a planted id is not taken
    assert node.wait_connected(10)
    assert not target.exists() and victim.read_text() == planted
    assert any("symbolic link" in r.getMessage() for r in caplog.records)
