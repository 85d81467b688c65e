"""The key from a file: OCTOHUB_SIGNATURE_KEY_FILE, systemd credentials, and the warning about --signature-key."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from octohub_sync import ConfigError, load_settings
from octohub_sync._config.settings import MAX_KEY_FILE_BYTES

ROOT = Path(__file__).resolve().parent.parent
SECRET = "file-key-0123456789abcdef"


def key_file(tmp_path: Path, content: "str | bytes", name: str = "key") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_") and k != "CREDENTIALS_DIRECTORY"}
    env.update(extra)
    return env


def test_key_file_is_read_once_with_the_trailing_newline_stripped(tmp_path: Path) -> None:
    path = key_file(tmp_path, SECRET + "\n")
    settings = load_settings(env_file=False, environ={"OCTOHUB_SIGNATURE_KEY_FILE": str(path)})
    assert settings.signature_key == SECRET
    assert settings.sources["signature_key"] == "key file"
    path.write_text("changed")  # read at start only: the settings are frozen
    assert settings.signature_key == SECRET
    shown = settings.masked()
    assert shown["OCTOHUB_SIGNATURE_KEY"] == (f"<{len(SECRET)} characters>", "key file")
    assert shown["OCTOHUB_SIGNATURE_KEY_FILE"] == (str(path), "environment")


def test_ws_key_file_too(tmp_path: Path) -> None:
    path = key_file(tmp_path, "ws-key-0123456789\r\n")
    settings = load_settings(env_file=False, environ={"OCTOHUB_WS_SIGNATURE_KEY_FILE": str(path)})
    assert settings.ws_signature_key == "ws-key-0123456789" and settings.signature_key == ""


def test_systemd_credential_when_no_key_is_set(tmp_path: Path) -> None:
    key_file(tmp_path, SECRET + "\n", "octohub_signature_key")
    key_file(tmp_path, "the-ws-key-0123456789", "octohub_ws_signature_key")
    settings = load_settings(env_file=False, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (settings.signature_key, settings.ws_signature_key) == (SECRET, "the-ws-key-0123456789")
    assert settings.sources["signature_key"] == "credential"
    # An explicit key (or key file) beats the credential; no credential file is not an error.
    explicit = load_settings(env_file=False, environ={"CREDENTIALS_DIRECTORY": str(tmp_path),
                                                      "OCTOHUB_SIGNATURE_KEY": "explicit-key-0123456789"})
    assert explicit.signature_key == "explicit-key-0123456789"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_settings(env_file=False, environ={"CREDENTIALS_DIRECTORY": str(empty)}).signature_key == ""


def test_key_and_key_file_follow_the_precedence_and_clash_in_one_place(tmp_path: Path) -> None:
    path = key_file(tmp_path, SECRET)
    both = {"OCTOHUB_SIGNATURE_KEY": "env-key-0123456789", "OCTOHUB_SIGNATURE_KEY_FILE": str(path)}
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file=False, environ=both)
    assert str(raised.value) == (f"OCTOHUB_SIGNATURE_KEY_FILE={str(path)!r}: OCTOHUB_SIGNATURE_KEY is set too, "
                                 "in the same place: set one of them")
    # A flag beats the environment, either way round.
    assert load_settings({"signature_key": "flag-key-0123456789"}, env_file=False,
                         environ={"OCTOHUB_SIGNATURE_KEY_FILE": str(path)}).signature_key == "flag-key-0123456789"
    assert load_settings({"signature_key_file": str(path)}, env_file=False,
                         environ={"OCTOHUB_SIGNATURE_KEY": "env-key-0123456789"}).signature_key == SECRET


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read the key file: No such file or directory"),
    ("dir", "cannot read the key file: Is a directory"),
    ("", "the key file is empty"),
    ("\n", "the key file is empty"),
    (b"s3cret-\xff\xfe-key", "the key file is not UTF-8 text"),
    ("x" * (MAX_KEY_FILE_BYTES + 1), "larger than 64 KiB: not a key file"),
])
def test_a_bad_key_file_names_variable_and_path_never_the_content(tmp_path: Path, content, problem: str) -> None:
    path = tmp_path / "key"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        key_file(tmp_path, content)
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file=False, environ={"OCTOHUB_SIGNATURE_KEY_FILE": str(path)})
    assert str(raised.value) == f"OCTOHUB_SIGNATURE_KEY_FILE={str(path)!r}: {problem}"
    assert "s3cret" not in str(raised.value)


def test_an_unreadable_credential_names_the_directory_and_path(tmp_path: Path) -> None:
    (tmp_path / "octohub_signature_key").mkdir()
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file=False, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    path = str(tmp_path / "octohub_signature_key")
    assert str(raised.value) == f"CREDENTIALS_DIRECTORY={path!r}: cannot read the key file: Is a directory"


def test_program_exits_2_on_a_missing_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    proc = subprocess.run([sys.executable, "run_node.py", "--env-file", os.devnull], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env=clean_env(OCTOHUB_SIGNATURE_KEY_FILE=str(missing)))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"octohub-node: configuration error: OCTOHUB_SIGNATURE_KEY_FILE={str(missing)!r}: "
                                   "cannot read the key file: No such file or directory")


def test_program_connects_with_a_systemd_credential_and_warns_about_a_key_flag(octohub_hub, tmp_path: Path) -> None:
    key_file(tmp_path, octohub_hub.key + "\n", "octohub_signature_key")
    flags = ["--env-file", os.devnull, "--server-host", "127.0.0.1", "--server-port", str(octohub_hub.api_port),
             "--log-level", "WARNING"]
    proc = subprocess.run([sys.executable, "run_node.py", "--check", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=clean_env(CREDENTIALS_DIRECTORY=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OCTOHUB_SIGNATURE_KEY" in proc.stdout and "[credential]" in proc.stdout
    assert "--signature-key puts the key" not in proc.stderr

    proc = subprocess.run([sys.executable, "run_node.py", "--check", *flags, "--signature-key", octohub_hub.key],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--signature-key puts the key on the command line, where every user of this machine can read it" \
        in proc.stderr
    assert octohub_hub.key not in proc.stdout + proc.stderr
