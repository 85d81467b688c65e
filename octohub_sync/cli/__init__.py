"""The ``octohub-node`` program (also ``python run_node.py`` and ``python -m octohub_sync``).

Everything a library must not do lives here: logging setup, signal handlers,
printing, exit codes. Its parts: ``--demo`` (_demo.py), ``--check`` (_doctor.py) and the exit
codes (_exit_codes.py); how a stop is asked for on each platform is _platform/stop_signals.py.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from typing import Any, Optional, Sequence

from .._config.settings import Settings, credential_name, env_name, load_settings, setting_help, setting_names
from .._delivery.ledger import default_state_dir
from .._execution import log_context
from .._ops.log_format import JsonFormatter, formatter
from .._ops.log_safety import SafeLogFilter
from .._platform.console import tolerant_console
from .._platform.stop_signals import StopRequests
from .._version import __version__
from ..app import Setup, install_app, load_app
from ..client import NodeWebSocketClient
from ..exceptions import ConfigError, LedgerUnavailable
from ..sdnotify import NotifySocket
from ._exit_codes import ExitCode

__all__ = ["main"]



def setup_logging(level: str, kind: str = "text") -> None:
    """``time - logger - LEVEL - [task id] message`` lines (or JSON objects, ``kind="json"``: OCTOHUB_LOG_FORMAT)
    on stderr, with signatures masked and control characters escaped in the records of every logger (the
    library's loggers filter their own: _ops/log_safety.py).

    The stream escapes what its encoding cannot show (``tolerant_console``, called by ``main``).
    """
    log_context.install()  # the task fields exist on every record before the first line is formatted
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(SafeLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websocket-client logs every disconnect at ERROR ("... - goodbye"); the node reports each one
    # itself, with the reason and the next step, so its own lines would only be noise.
    logging.getLogger("websocket").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="octohub-node",
        description="Run an OctoHub node. Settings come from flags > .env > environment > defaults.")
    parser.add_argument("--env-file", metavar="PATH", help="dotenv file to read instead of ./.env")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--demo", action="store_true",
                      help="start a local hub in this process, run sample tasks through a node, print results")
    mode.add_argument("--check", action="store_true",
                      help="check configuration, API, connection and clock; exit non-zero naming what failed")
    parser.add_argument("--version", action="version", version=f"octohub_sync {__version__}")
    group = parser.add_argument_group("settings (each overrides its OCTOHUB_* variable)")
    defaults = Settings()
    for name in setting_names():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        shown = "" if default in (None, "") else f", default {default}"
        extra: dict[str, Any] = {"metavar": "VALUE"}
        if isinstance(default, bool):  # --tls alone means --tls true
            extra = {"metavar": "BOOL", "nargs": "?", "const": "true"}
        group.add_argument(flag, dest=name, help=f"{setting_help(name)} [{env_name(name)}{shown}]", **extra)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in setting_names() if getattr(args, name) is not None}


def main(argv: Optional[Sequence[str]] = None, *, setup: Optional[Setup] = None) -> int:
    """Run the program; returns the exit code.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
        setup: called with the client before it starts, to register your handlers; this is
            how your own ``my_node.py`` gets the flags, ``.env``, logging and signal handling.
            ``--app`` (``OCTOHUB_APP``) does the same without a script of your own; given
            both, ``setup`` runs first.
    """
    # Before anything writes: a handler's Chinese log line or print() must not raise on a cp1252 pipe.
    tolerant_console()
    args = build_parser().parse_args(argv)
    try:
        if args.demo:
            from ._demo import run_demo
            setup_logging((args.log_level or "ERROR").upper())  # the demo prints every answer itself
            return run_demo(_overrides(args))
        settings = load_settings(_overrides(args), env_file=args.env_file, override_source="flag")
        setup_logging(settings.log_level, settings.log_format)
        _warn_about_keys_on_the_command_line(args)
        if settings.state_dir is None:  # a service keeps its results across restarts unless told not to
            settings = replace(settings, state_dir=str(default_state_dir()),
                               sources={**settings.sources, "state_dir": "program default"})
        if args.check:  # with the node's state directory: it says where the node's pc_id is kept
            from ._doctor import run_check
            if settings.app:
                load_app(settings.app)  # a module that does not load fails --check too (exit 2)
            return run_check(settings)
        return run_node(settings, setup=setup)
    except ConfigError as exc:
        print(f"octohub-node: configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except LedgerUnavailable as exc:  # a full disk, say: not 2, so that a service manager tries again later
        print(f"octohub-node: {exc}", file=sys.stderr)
        return ExitCode.FAILED


def _warn_about_keys_on_the_command_line(args: argparse.Namespace) -> None:
    for name in ("signature_key", "ws_signature_key"):
        if getattr(args, name) is not None:
            logging.getLogger(__name__).warning(
                "--%s puts the key on the command line, where every user of this machine can read it "
                "(ps, /proc/<pid>/cmdline); use %s_FILE, a systemd credential (LoadCredential=%s:PATH) "
                "or an environment file readable only by the node", name.replace("_", "-"), env_name(name),
                credential_name(name))


def run_node(settings: Settings, *, setup: Optional[Setup] = None) -> int:
    """Run until asked to stop (warm stop; a second request exits at once) or until giving up.

    SIGTERM, SIGINT (Ctrl+C), SIGBREAK (Ctrl+Break, Windows) and Windows' console close, logoff
    and shutdown events ask for the stop (see :mod:`octohub_sync._platform.stop_signals`).

    Raises:
        ConfigError: the app (``OCTOHUB_APP``) does not load or registers nothing.
    """
    app = load_app(settings.app) if settings.app else None  # before anything connects
    # Under systemd (Type=notify) the program speaks for its process: READY=1, WATCHDOG=1, STOPPING=1.
    client = NodeWebSocketClient(settings=settings, systemd_notify=NotifySocket.from_environ())
    for handler in logging.getLogger().handlers:  # the JSON lines name the node on every record
        if isinstance(handler.formatter, JsonFormatter):
            handler.formatter.pc_id = client.pc_id
    if setup is not None:
        setup(client)
    if app is not None and settings.app:
        served = install_app(client, app, settings.app)
        client.log.info("serving %s: %s", settings.app, ", ".join(served))
    stops = StopRequests(forced_exit=ExitCode.FAILED, log=client.log)  # its lines with the node's pc_id
    client.log.debug("stopping on %s", ", ".join(stops.install()))
    client.start()
    try:
        client.wait_stopped(until=stops.requested)
        clean = client.stop(timeout=stops.budget(settings.shutdown_timeout))
    finally:
        stops.stopped.set()  # a Windows console event's handler holds the process until now
    if client.failure is not None:
        print(f"octohub-node: {client.failure}", file=sys.stderr)
        return ExitCode.FAILED
    if client.recycle is not None and clean:
        # Not 0: a service manager restarts only a process that "failed" (systemd's Restart=on-failure).
        client.log.info("exiting with code %d (recycle) for the service manager to start the node again",
                        ExitCode.RECYCLE)
        return ExitCode.RECYCLE
    return ExitCode.OK if clean else ExitCode.FAILED
