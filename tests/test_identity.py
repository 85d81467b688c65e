"""The pc_id: derived from host name and MAC, kept in the state directory across a host-name change,
new on another machine; checked across real processes (uuid caches the MAC within one)."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from octohub_sync._config import identity
from octohub_sync.cli._doctor import run_check
from octohub_sync.hub import LocalHub
from octohub_sync._config.identity import PcIdSource, identity_file, machine_pc_id, resolve_pc_id

from .conftest import KEY, wait_until
from .test_doctor import check_settings, run_cli_check
from .test_ledger import journal_lines
from .test_process import ROOT, finish, log_text, spawn

MAC, OTHER_MAC = "0a1b2c3d4e5f", "0a1b2c3d4e60"


def test_pc_id_distinct_per_host_mac_and_instance() -> None:
    a = machine_pc_id(hostname="h1", mac="001122334455")
    assert a == machine_pc_id(hostname="h1", mac="001122334455")
    assert re.fullmatch(r"node_[0-9a-f]{12}", a), a
    assert a != machine_pc_id(hostname="h2", mac="001122334455")
    assert a != machine_pc_id(hostname="h1", mac="001122334456")
    assert a != machine_pc_id("worker2", hostname="h1", mac="001122334455")


def pc_id_in_a_new_process(prelude: str = "") -> str:
    code = f"{prelude}\nfrom octohub_sync._config.identity import machine_pc_id\nprint(machine_pc_id())"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_this_machine_gets_the_same_pc_id_in_two_processes() -> None:
    first, second = pc_id_in_a_new_process(), pc_id_in_a_new_process()
    assert re.fullmatch(r"node_[0-9a-f]{12}", first) and first == second == machine_pc_id()


def test_a_machine_without_a_mac_gets_the_same_pc_id_in_two_processes(tmp_path: Path) -> None:
    # With no MAC, uuid.getnode() returns a random number with the multicast bit set, new in every
    # process: only the machine id keeps the pc_id stable.
    def without_a_mac(machine_id: str) -> str:
        (tmp_path / machine_id).write_text(machine_id + "\n")
        return ("import random, uuid\nfrom octohub_sync._config import identity\n"
                "uuid.getnode = lambda: (1 << 40) | random.getrandbits(40)\n"
                f"identity._MACHINE_ID_FILES = ({str(tmp_path / machine_id)!r},)")

    first, second = pc_id_in_a_new_process(without_a_mac("0123abcd")), pc_id_in_a_new_process(without_a_mac("0123abcd"))
    assert first == second and first.startswith("node_")
    assert first != pc_id_in_a_new_process(without_a_mac("4567cdef"))  # another machine


def test_without_a_mac_the_machine_id_keeps_the_pc_id_stable(tmp_path, monkeypatch) -> None:
    import uuid

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


# -- kept in the state directory (in one process, the machine given) -------------------------------------


def resolve(state: Path | str | None, hostname: str = "laptop", mac: str = MAC, **kw) -> identity.PcId:
    return resolve_pc_id(pc_id=kw.pop("pc_id", None), instance=kw.pop("instance", None),
                         state_dir=None if state is None else str(state), hostname=hostname, mac=mac, **kw)


def test_the_first_pc_id_is_kept_across_a_host_name_change(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    first = resolve(tmp_path, hostname="laptop.home")
    assert first.source is PcIdSource.FIRST and first.value == machine_pc_id(hostname="laptop.home", mac=MAC)
    kept = json.loads(identity_file(tmp_path).read_text())
    assert (kept["pc_id"], kept["machine"], kept["hostname"]) == (first.value, MAC, "laptop.home")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pc_id.json"]  # no temp file left
    again = resolve(tmp_path, hostname="laptop.office")
    assert (again.value, again.source) == (first.value, PcIdSource.KEPT)
    assert again.describe() == f"kept from the first start in {identity_file(tmp_path)}"
    assert any("host name is 'laptop.office', not 'laptop.home'" in r.getMessage() for r in caplog.records)


def test_another_mac_is_another_machine_with_its_own_pc_id(tmp_path: Path, caplog) -> None:
    original = resolve(tmp_path).value
    caplog.set_level(logging.INFO, logger="octohub_sync")
    clone = resolve(tmp_path, mac=OTHER_MAC)
    assert clone.source is PcIdSource.MACHINE_CHANGED and clone.value == machine_pc_id(hostname="laptop", mac=OTHER_MAC)
    assert clone.value != original and "because the machine changed" in clone.describe()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert original in warning.getMessage() and clone.value in warning.getMessage()
    assert (resolve(tmp_path, mac=OTHER_MAC, hostname="renamed").value, resolve(tmp_path, mac=OTHER_MAC).source) == (
        clone.value, PcIdSource.KEPT)  # from now on the clone keeps its own


def test_each_instance_keeps_its_own(tmp_path: Path) -> None:
    a, b = resolve(tmp_path, instance="a"), resolve(tmp_path, instance="b")
    assert a.value != b.value and a.path != b.path == identity_file(tmp_path, "b") == tmp_path / "pc_id-b.json"
    assert resolve(tmp_path, instance="a", hostname="other").value == a.value


def test_the_setting_wins_and_no_state_directory_derives_as_before(tmp_path: Path) -> None:
    resolve(tmp_path)
    chosen = resolve(tmp_path, pc_id="node_mine", mac=OTHER_MAC)
    assert (chosen.value, chosen.source, chosen.describe()) == ("node_mine", PcIdSource.SETTING, "set by OCTOHUB_PC_ID")
    for state in (None, "off"):
        derived = resolve(state, hostname="renamed")
        assert derived.value == machine_pc_id(hostname="renamed", mac=MAC) and derived.source is PcIdSource.NO_STATE
    assert not Path("off").exists()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"pc_id": "../../etc", "machine": "0a1b2c3d4e5f"}',
                                     '{"pc_id": "node_x"}', "\udcff"])
def test_a_corrupt_file_is_logged_and_replaced(tmp_path: Path, content: str, caplog) -> None:
    identity_file(tmp_path).write_text(content, errors="surrogateescape")
    caplog.set_level(logging.INFO, logger="octohub_sync")
    got = resolve(tmp_path)
    assert got.source is PcIdSource.UNREADABLE and got.value == machine_pc_id(hostname="laptop", mac=MAC)
    assert any(r.levelno == logging.WARNING and "cannot read" in r.getMessage() for r in caplog.records)
    assert resolve(tmp_path).source is PcIdSource.KEPT  # repaired


def test_an_unreadable_file_is_logged_never_raised(tmp_path: Path, caplog) -> None:
    identity_file(tmp_path).mkdir()  # reading and replacing it both fail
    caplog.set_level(logging.INFO, logger="octohub_sync")
    got = resolve(tmp_path)
    assert got.source is PcIdSource.UNREADABLE and got.value == machine_pc_id(hostname="laptop", mac=MAC)
    assert [r.getMessage()[:15] for r in caplog.records if r.levelno == logging.WARNING] == [
        "cannot read the", "cannot keep pc_"]
    assert [p.name for p in tmp_path.iterdir()] == ["pc_id.json"]


def test_the_file_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    first = resolve(tmp_path)
    before = identity_file(tmp_path).read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    resolve(tmp_path, mac=OTHER_MAC)
    assert identity_file(tmp_path).read_text() == before  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["pc_id.json"]  # the temp file removed
    monkeypatch.undo()
    assert resolve(tmp_path).value == first.value


def test_looking_only_writes_nothing(tmp_path: Path) -> None:
    got = resolve(tmp_path / "state", save=False)
    assert got.source is PcIdSource.FIRST and not (tmp_path / "state").exists()


# -- what --check says -------------------------------------------------------------------------------


def check_output(hub: LocalHub, **settings) -> str:
    out = io.StringIO()
    assert run_check(check_settings(hub, **settings), out=out) == 0, out.getvalue()
    return out.getvalue()


def pc_id_line(output: str) -> str:
    [line] = [line for line in output.splitlines() if "pc_id in use" in line]
    return line.strip()


def test_check_says_which_pc_id_and_why(hub: LocalHub, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert pc_id_line(check_output(hub)) == "pc_id in use: node_doctor (set by OCTOHUB_PC_ID)"
    derived = machine_pc_id()
    assert pc_id_line(check_output(hub, pc_id=None, state_dir="off")) == (
        f"pc_id in use: {derived} (derived from host name and MAC because there is no state directory)")
    first = pc_id_line(check_output(hub, pc_id=None, state_dir=str(state)))
    assert first == (f"pc_id in use: {derived} (derived from host name and MAC; "
                     f"kept in {identity_file(state)} from the first start on)")
    assert not state.exists()  # the check only looks
    kept = resolve_pc_id(pc_id=None, instance=None, state_dir=str(state), hostname="before-the-rename").value
    assert pc_id_line(check_output(hub, pc_id=None, state_dir=str(state))) == (
        f"pc_id in use: {kept} (kept from the first start in {identity_file(state)})")
    resolve_pc_id(pc_id=None, instance=None, state_dir=str(state), mac=OTHER_MAC)  # written on another machine
    assert "re-derived from host name and MAC because the machine changed" in pc_id_line(
        check_output(hub, pc_id=None, state_dir=str(state)))


def test_the_program_checks_with_its_default_state_directory(tmp_path: Path) -> None:
    # conftest points XDG_STATE_HOME at a fresh directory: the program's default state dir is in it.
    env_file = tmp_path / ".env"
    env_file.write_text("")
    done = run_cli_check(env_file=env_file)
    expected = identity_file(Path(os.environ["XDG_STATE_HOME"]) / "octohub-node")
    assert f"MAC; kept in {expected} from the first start on" in done.stdout, done.stdout + done.stderr


# -- real processes: a renamed host, a cloned machine ----------------------------------------------------


def machine(hostname: str, mac: str) -> dict[str, str]:
    """Environment for tests/node_process.py: the host name and MAC its process sees."""
    return {"OCTOHUB_TEST_HOSTNAME": hostname, "OCTOHUB_TEST_MAC": mac}


def connected_pc_id(hub: LocalHub, proc: subprocess.Popen, known: int) -> str:
    """The pc_id of the connection the hub accepts after the ``known`` ones it had."""
    assert hub.wait_for(lambda: len(hub.connections) > known, 20), log_text(proc)
    return hub.connections[known]["pc_id"]


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    return finish(proc)


def test_a_renamed_host_keeps_its_pc_id_and_delivers_the_results_left_in_its_ledger(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with LocalHub(KEY, redeliver=False) as hub:
        first = spawn(hub, tmp_path, None, log_name="first", OCTOHUB_TEST_JOURNAL=str(journal),
                      **machine("laptop.home", MAC))
        try:
            pc_id = connected_pc_id(hub, first, 0)
            assert pc_id == machine_pc_id(hostname="laptop.home", mac=MAC)
            assert hub.wait_connected(pc_id, 10)
            ids = [hub.send_task("journal", {"seconds": 1.5}, pc_id=pc_id) for _ in range(3)]
            assert wait_until(lambda: len(journal_lines(journal)) == 3, 10)
            hub.stop_ws()  # the results are produced while the hub is unreachable: they wait in the ledger
            code, err = stop(first)
        finally:
            first.kill()
        assert code == 1 and "result(s) not sent" in err, err[-3000:]
        assert sum(t in hub.results for t in ids) < 3
        hub.start_ws()
        known = len(hub.connections)
        second = spawn(hub, tmp_path, None, log_name="second", **machine("laptop.office", MAC))
        try:
            assert connected_pc_id(hub, second, known) == pc_id
            assert hub.wait_for(lambda: all(t in hub.results for t in ids), 20), log_text(second)
            code, err = stop(second)
        finally:
            second.kill()
    assert code == 0, err[-3000:]
    assert "host name is 'laptop.office', not 'laptop.home' as at the first start" in err
    assert {r["result"]["pid"] for t in ids for r in hub.results[t]} == {first.pid}  # run by the first, sent by the second


def test_a_cloned_machine_gets_its_own_pc_id_and_both_run(tmp_path: Path) -> None:
    with LocalHub(KEY) as hub:
        original = spawn(hub, tmp_path, None, log_name="original", **machine("template", MAC))
        try:
            pc_id = connected_pc_id(hub, original, 0)
            code, _ = stop(original)
        finally:
            original.kill()
        assert code == 0
        clone_home = tmp_path / "clone"
        shutil.copytree(tmp_path / "state", clone_home / "state")  # the clone's disk: a copy of the original's
        known = len(hub.connections)
        clone = spawn(hub, clone_home, None, log_name="clone", **machine("template", OTHER_MAC))
        again = spawn(hub, tmp_path, None, log_name="again", **machine("template", MAC))
        try:
            assert hub.wait_for(lambda: len(hub.connections) >= known + 2, 20), log_text(clone) + log_text(again)
            ids = {c["pc_id"] for c in hub.connections[known:]}
            assert ids == {pc_id, machine_pc_id(hostname="template", mac=OTHER_MAC)}
            assert hub.wait_for(lambda: all(hub.connected(i) for i in ids), 10)
            codes = [stop(clone)[0], stop(again)[0]]
        finally:
            clone.kill()
            again.kill()
    assert codes == [0, 0]
    assert "a cloned machine" in log_text(clone)
