"""The Windows (WinSW) and macOS (launchd) service definitions in examples/: they parse, the program
accepts their arguments, and each gives a stop more time than the node's drain takes."""
from __future__ import annotations

import plistlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from octohub_sync.cli import build_parser
from octohub_sync._config.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: What a warm stop may take with the default settings: the running tasks, then closing the connection.
DRAIN = Settings().shutdown_timeout + Settings().connect_timeout

_UNITS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600}


def winsw_seconds(text: str) -> float:
    """A WinSW duration ("45 sec", "10sec", "1 hour") in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", text)
    assert match and match.group(2) in _UNITS, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def program_args(argv: list[str]) -> list[str]:
    """The node's own arguments in ``python -m octohub_sync ...``."""
    assert argv[1:3] == ["-m", "octohub_sync"], argv
    return argv[3:]


def test_winsw_service_definition() -> None:
    service = ET.parse(EXAMPLES / "windows" / "octohub-node.xml").getroot()
    assert service.tag == "service"
    assert service.findtext("id") == "octohub-node"
    assert service.findtext("executable").endswith("python.exe")
    args = build_parser().parse_args(program_args(["python", *service.findtext("arguments").split()]))
    assert args.env_file and args.app
    assert winsw_seconds(service.findtext("stoptimeout")) > DRAIN
    assert service.findtext("workingdirectory")
    env = {e.get("name"): e.get("value") for e in service.findall("env")}
    assert "OCTOHUB_SIGNATURE_KEY_FILE" in env and env["PYTHONUTF8"] == "1"
    log = service.find("log")
    assert log.get("mode") == "roll-by-size" and int(log.findtext("sizeThreshold")) > 0
    assert int(log.findtext("keepFiles")) > 0 and service.findtext("logpath")
    failures = service.findall("onfailure")
    assert failures and all(f.get("action") == "restart" for f in failures)
    assert winsw_seconds(service.findtext("resetfailure")) > 0


def test_launchd_agent() -> None:
    with open(EXAMPLES / "macos" / "com.octohub.node.plist", "rb") as file:
        job = plistlib.load(file)
    assert job["Label"] == "com.octohub.node"
    args = build_parser().parse_args(program_args(job["ProgramArguments"]))
    assert args.env_file and args.app
    # Restarted after a failure, left stopped after a clean stop (exit 0).
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ExitTimeOut"] > DRAIN
    assert job["WorkingDirectory"].startswith("/")  # launchd expands neither ~ nor $HOME
    assert all(job[key].startswith("/") for key in ("StandardOutPath", "StandardErrorPath"))
    assert "OCTOHUB_SIGNATURE_KEY_FILE" in job["EnvironmentVariables"]
