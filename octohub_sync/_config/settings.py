"""Settings: read in exactly one place, validated once, frozen.

Precedence, highest first: explicit overrides (constructor arguments, command-line
flags) > the ``.env`` file > the process environment > defaults. The ``.env``
file beating the environment is kept on purpose: it is the order the original asyncio client
documented, so a deployment moved to this package reads the same values.

Why one module: the table of every setting (its default, help text and parser) is most of it, and
the rule that reads settings in exactly one place is kept by keeping them here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .._wire.addresses import check_host, host_for_url
from .._wire.signing import redact
from ..exceptions import ConfigError
from .proxies import EnvironmentProxies, Route, mask, parse_setting, route
from .suggest import did_you_mean

__all__ = ["PUBLIC_EXAMPLE_KEY", "Settings", "credential_name", "load_settings", "read_key_file", "setting_names"]

#: The public example key (env.example, the test vectors of docs/protocol.md §1): anyone can sign with it.
PUBLIC_EXAMPLE_KEY = "mySignatureKey123456789012345"

#: pc_id and instance names go into a URL and a signed string: keep them boring.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: ``module`` or ``module:function``, dotted Python names (OCTOHUB_APP).
APP_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _opt(default: Any, help: str, *, kind: str = "str", secret: bool = False, repr: bool = True) -> Any:
    return field(default=default, repr=repr, metadata={"help": help, "kind": kind, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every setting of a node. Field ``x`` is read from ``OCTOHUB_X``."""

    server_host: str = _opt("localhost", "API server host name or IP address, without a scheme or port (and WS host in direct mode)", kind="host")
    server_port: int = _opt(8080, "API server port", kind="port")
    ws_port: int = _opt(8000, "WebSocket server port (direct mode)", kind="port")
    ws_host: Optional[str] = _opt(None, "replace the host of every WebSocket address with this one", kind="wshost")
    api_url: Optional[str] = _opt(None, "full API base URL, e.g. https://hub.example:8443 (overrides host/port/TLS for the API)", kind="url")
    connect_mode: str = _opt("api", "api: ask the API server for the address; direct: sign the WS URL yourself", kind="mode")
    signature_key: str = field(default="", repr=False, metadata={"help": "HMAC key of the API server (required; in direct mode the fallback for OCTOHUB_WS_SIGNATURE_KEY)", "kind": "str", "secret": True})
    signature_key_file: Optional[str] = _opt(None, "read OCTOHUB_SIGNATURE_KEY from this file (default: the systemd credential octohub_signature_key, if any)", kind="path")
    ws_signature_key: str = field(default="", repr=False, metadata={"help": "HMAC key of the WebSocket server, for direct mode (default: OCTOHUB_SIGNATURE_KEY)", "kind": "str", "secret": True})
    ws_signature_key_file: Optional[str] = _opt(None, "read OCTOHUB_WS_SIGNATURE_KEY from this file (default: the systemd credential octohub_ws_signature_key, if any)", kind="path")
    tls: bool = _opt(False, "use https/wss", kind="bool")
    ca_file: Optional[str] = _opt(None, "CA bundle to verify the hub's certificate (private CA)", kind="cafile")
    tls_insecure: bool = _opt(False, "do not verify certificates (logs a warning on every connect)", kind="bool")
    proxy: Optional[str] = _opt(None, "proxy for the API and the WebSocket: http://[user:password@]host:port, socks5://..., socks5h://... or none (unset: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY)", kind="proxy", repr=False)
    pc_id: Optional[str] = _opt(None, "node id; default node_<hash of host name and MAC>, kept in the state directory from the first start", kind="name")
    instance: Optional[str] = _opt(None, "instance name mixed into the default pc_id (several nodes on one host)", kind="name")
    reconnect_interval: float = _opt(5.0, "base delay of reconnect backoff (s)", kind="float>0")
    reconnect_max_interval: float = _opt(60.0, "longest delay between reconnect attempts (s)", kind="float>0")
    max_reconnect_attempts: int = _opt(0, "consecutive failed attempts before the node gives up (0 = never)", kind="int>=0")
    stable_after: float = _opt(30.0, "a connection up this long resets the backoff (s)", kind="float>0")
    connect_timeout: float = _opt(10.0, "one deadline for each connect: API request, TCP, proxy, TLS, WebSocket handshake (s)", kind="float>0")
    ping_interval: float = _opt(30.0, "keep-alive interval (s): a ping frame (seed hub), or a pong frame and a JSON "
                                      "ping (Go server)", kind="float>0")
    ping_timeout: float = _opt(10.0, "how long past a ping interval the hub may stay silent: no pong for OCTOHUB_PING_INTERVAL + this + 1 s = dead connection (s)", kind="float>0")
    hub_read_timeout: float = _opt(60.0, "the hub's read deadline: re-register this long (plus a margin) after abandoning a connection (s, 0 = never)", kind="float>=0")
    max_workers: int = _opt(8, "tasks run at once", kind="int>=1")
    max_pending: int = _opt(256, "tasks waiting for a worker before new ones are refused", kind="int>=0")
    task_timeout: float = _opt(0.0, "default task time limit (s, 0 = none)", kind="float>=0")
    cancel_grace: float = _opt(0.0, "raise TaskCancelled inside a handler still running this long after a cancel or its time limit (s, 0 = never)", kind="float>=0")
    progress_interval: float = _opt(1.0, "at most one task_progress frame per task every N s", kind="float>=0")
    shutdown_timeout: float = _opt(30.0, "how long stop waits for running tasks (s)", kind="float>=0")
    outbox_size: int = _opt(1000, "results kept while disconnected", kind="int>=1")
    result_cache_size: int = _opt(1000, "finished results kept to answer redelivered task ids", kind="int>=1")
    state_dir: Optional[str] = _opt(None, "keep unsent results and finished tasks here across restarts (off = in memory; unset: in memory for NodeWebSocketClient, the platform's state directory for the program octohub-node / run_node.py, see docs/crash-safety.md)", kind="statedir")
    max_tasks: int = _opt(0, "recycle: after this many tasks the node stops taking tasks, drains and exits with code 3 for its service manager to start it again (0 = never)", kind="int>=0")
    max_memory: int = _opt(0, "recycle once the process's memory (RSS, MB; peak RSS on macOS) reaches this (0 = never)", kind="int>=0")
    max_uptime: float = _opt(0.0, "recycle after running this long (s, 0 = never)", kind="float>=0")
    max_message_bytes: int = _opt(4 * 2**20, "larger frames are refused; over 4x (64 KiB at least) the connection ends, code 1009 (bytes)", kind="int>=1")
    max_result_bytes: int = _opt(2**20, "larger results are answered failed ResultTooLarge (bytes, 0 = no limit)", kind="int>=0")
    log_task_errors: str = _opt("text", "how a handler's exception is logged: text (its type and message, cut to 500 characters) or type (its type only, with the task id: the message may hold personal data)", kind="errorlog")
    status_interval: float = _opt(300.0, "log a status line every N s (0 = off)", kind="float>=0")
    metrics_port: int = _opt(0, "serve /livez, /readyz, /healthz, /metrics and /tasks on this port (0 = off)", kind="port0")
    metrics_host: str = _opt("127.0.0.1", "address of the metrics endpoint", kind="metricshost")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL (the demo: ERROR)", kind="level")
    log_format: str = _opt("text", "the program's log lines: text (time - logger - LEVEL - [task id] message) or json (one object per line: time, level, logger, message, pc_id, task_id, task_type, task_key, exception)", kind="logformat")
    app: Optional[str] = _opt(None, "serve the handlers of this module: module (its setup(client) or Handlers registry) or module:function", kind="app")

    #: Where each value came from ("environment", ".env", "override" or "flag"; absent: default).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: What reading found wrong but not fatal: an unknown ``OCTOHUB_*`` name (a typo); the node logs each at WARNING.
    warnings: tuple = field(default=(), compare=False, repr=False)
    #: The proxy variables of the environment, read with the settings (only when OCTOHUB_PROXY is unset).
    environment: EnvironmentProxies = field(default_factory=EnvironmentProxies, compare=False, repr=False)

    @property
    def api_base(self) -> str:
        """Base URL of the API server, without a trailing slash."""
        if self.api_url:
            return self.api_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host_for_url(self.server_host)}:{self.server_port}"

    @property
    def ws_scheme(self) -> str:
        """``wss`` when TLS is on (or the API URL is https), else ``ws``."""
        secure = self.tls or (self.api_url or "").lower().startswith("https:")
        return "wss" if secure else "ws"

    @property
    def uses_public_key(self) -> bool:
        """True when the key in use is the one published in env.example."""
        return PUBLIC_EXAMPLE_KEY in (self.signature_key, self.ws_key)

    @property
    def ws_key(self) -> str:
        """The key that signs a WebSocket URL in direct mode: the WS server's own, else the shared one."""
        return self.ws_signature_key or self.signature_key

    def route(self, url: str) -> Route:
        """Through which proxy, if any, the node reaches ``url`` (the API's or a WebSocket address)."""
        return route(url, explicit=self.proxy, environment=self.environment)

    def masked(self) -> dict[str, tuple[str, str]]:
        """Every setting as ``{env name: (shown value, source)}`` with the key and proxy credentials masked."""
        shown = {}
        for f in _fields():
            value = getattr(self, f.name)
            if f.metadata["secret"]:
                value = f"<{len(value)} character{'s' * (len(value) != 1)}>" if value else "<not set>"
            shown[env_name(f.name)] = (redact(str(value)), self.sources.get(f.name, "default"))
        return shown


def _fields() -> list:
    return [f for f in fields(Settings) if "help" in f.metadata]  # not sources, not environment


def env_name(name: str) -> str:
    """``server_host`` -> ``OCTOHUB_SERVER_HOST``."""
    return "OCTOHUB_" + name.upper()


def setting_names() -> list[str]:
    """Field names of every setting, in declaration order."""
    return [f.name for f in _fields()]


def setting_help(name: str) -> str:
    """One line describing a setting."""
    return Settings.__dataclass_fields__[name].metadata["help"]


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true/false, 1/0, yes/no or on/off")


def _parse_number(cast: Callable[[float], Any], minimum: float, *, above: bool = False) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        try:
            value = float(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise ValueError("expected a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if cast is int and value != int(value):
            raise ValueError("expected a whole number")
        if value < minimum or (above and value == minimum):
            raise ValueError(f"must be {'>' if above else '>='} {minimum:g}")
        return cast(value)
    return parse


def _parse_choice(choices: tuple, *, upper: bool = False) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip()
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value
    return parse


def _parse_text(check: Optional[Callable[[str], Any]] = None, problem: str = "") -> Callable[[Any], str]:
    # Empty values never get here: load_settings() treats them as "use the default".
    def parse(raw: Any) -> str:
        value = str(raw).strip()
        if check is not None and not check(value):
            raise ValueError(problem)
        return value
    return parse


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _parse_port(minimum: int) -> Callable[[Any], int]:
    number = _parse_number(int, minimum)

    def parse(raw: Any) -> int:
        value = number(raw)
        if value > 65535:
            raise ValueError("must be <= 65535")
        return value
    return parse


def _parse_ca_file(raw: Any) -> str:
    """An existing file that holds certificates: a wrong one fails here, once, not on every connect."""
    import ssl  # here: only a node given a CA file pays for it
    path = str(raw).strip()
    if not os.path.isfile(path):
        raise ValueError("no such file")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"not a CA bundle (PEM certificates): {getattr(exc, 'reason', None) or exc}") from None
    return path


def _parse_host(url_setting: str, port_setting: str) -> Callable[[Any], str]:
    return lambda raw: check_host(str(raw).strip(), url_setting=url_setting, port_setting=port_setting)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": _parse_text(),
    "host": _parse_host("OCTOHUB_API_URL", "OCTOHUB_SERVER_PORT"),
    "wshost": _parse_host("OCTOHUB_API_URL (the WebSocket address comes from the API)", "OCTOHUB_WS_PORT"),
    "metricshost": _parse_host("nothing: the metrics server listens on an address", "OCTOHUB_METRICS_PORT"),
    "port": _parse_port(1),
    "port0": _parse_port(0),
    "url": _parse_text(_is_http_url, "expected http://host:port or https://host:port"),
    "mode": _parse_choice(("api", "direct")),
    "bool": lambda raw: raw if isinstance(raw, bool) else _parse_bool(str(raw)),
    "cafile": _parse_ca_file,
    "path": _parse_text(),  # read later, with its own errors (see _keys_from_files)
    "name": _parse_text(SAFE_NAME.match, "use 1-64 characters from A-Z a-z 0-9 _ . -"),
    "float>0": _parse_number(float, 0, above=True),
    "float>=0": _parse_number(float, 0),
    "int>=0": _parse_number(int, 0),
    "int>=1": _parse_number(int, 1),
    "level": _parse_choice(_LOG_LEVELS, upper=True),
    "errorlog": _parse_choice(("text", "type")),
    "logformat": _parse_choice(("text", "json")),
    "statedir": lambda raw: "off" if str(raw).strip().lower() in ("off", "none") else str(raw).strip(),
    "proxy": parse_setting,
    "app": _parse_text(APP_SPEC.match, "expected module or module:function (dotted Python names)"),
}


def _read_env_file(env_file: str | os.PathLike | None | bool) -> dict[str, str]:
    if env_file is False:
        return {}
    if env_file is None or env_file is True:
        path = Path(".env")
        if not path.is_file():
            return {}
    else:
        path = Path(env_file)
        if not path.exists():
            raise ConfigError("--env-file", str(path), "no such file")
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env_file: str | os.PathLike | None | bool = None,
    environ: Mapping[str, str] | None = None,
    override_source: str = "override",
) -> Settings:
    """Build validated :class:`Settings`.

    Args:
        overrides: field name -> value; beats everything else. ``None`` values are ignored.
        env_file: path of a dotenv file; ``None`` reads ``./.env`` if present; ``False`` reads none.
        environ: the environment to read (default ``os.environ``).
        override_source: how ``sources`` names the overrides (the program says "flag").

    Returns:
        The frozen settings, with ``sources`` telling where each value came from.

    Raises:
        ConfigError: a value is invalid; the message names the variable and the value.
    """
    environ = os.environ if environ is None else environ
    layers = (
        (override_source, {env_name(k): v for k, v in (overrides or {}).items() if v is not None}),
        (".env", _read_env_file(env_file)),
        ("environment", environ),
    )
    unknown = sorted(set((overrides or {})) - set(setting_names()))
    if unknown:  # a keyword argument or a flag: named as the caller wrote it, not as an OCTOHUB_* variable
        raise ConfigError(unknown[0], None, "no such setting" + did_you_mean(unknown[0], setting_names()),
                          show_value=False)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ranks: dict[str, int] = {}  # field -> the precedence of the layer its value came from (0 is highest)
    for f in _fields():
        for rank, (source, layer) in enumerate(layers):
            if env_name(f.name) in layer:
                raw = layer[env_name(f.name)]
                if isinstance(raw, str) and not raw.strip():
                    break  # an empty value means "use the default": a blank OCTOHUB_X= line changes nothing
                try:
                    values[f.name] = _PARSERS[f.metadata["kind"]](raw)
                except (TypeError, ValueError) as exc:
                    shown = mask(raw) if f.metadata["kind"] == "proxy" else raw  # a proxy URL's password
                    raise ConfigError(env_name(f.name), shown, str(exc)) from None
                sources[f.name], ranks[f.name] = source, rank
                break
    _keys_from_files(values, sources, ranks, environ)
    # OCTOHUB_PROXY set: the environment's proxy variables are not used, so not checked either.
    environment = EnvironmentProxies() if "proxy" in values else EnvironmentProxies.read(environ)
    settings = replace(Settings(), **values, sources=sources, environment=environment,
                       warnings=_unknown_names(layers[1:]))
    _check_together(settings)
    return settings


#: ``OCTOHUB_TEST_*``: the test suite's own hooks (a fake host name, MAC or journal), not settings.
_NOT_SETTINGS = "OCTOHUB_TEST_"


def _unknown_names(layers: tuple) -> tuple:
    """One warning per ``OCTOHUB_*`` name of ``.env`` or the environment that is no setting: a typo
    (``OCTOHUB_MAX_WORKER``) would otherwise leave the default in force without a word."""
    known = [env_name(name) for name in setting_names()]
    return tuple(f"{name} in {source} is not a setting; it is ignored{did_you_mean(name, known)}"
                 for source, layer in layers for name in sorted(layer)
                 if name.startswith("OCTOHUB_") and name not in known and not name.startswith(_NOT_SETTINGS))


#: A key file larger than this is not a key file (a wrong path, say): it is refused unread.
MAX_KEY_FILE_BYTES = 64 * 1024

#: systemd credentials (``LoadCredential=NAME:PATH``) are files named NAME in this directory.
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


def credential_name(name: str) -> str:
    """``signature_key`` -> ``octohub_signature_key``, the systemd credential holding it."""
    return "octohub_" + name


def _keys_from_files(values: dict[str, Any], sources: dict[str, str], ranks: dict[str, int],
                     environ: Mapping[str, str]) -> None:
    """Each key from its ``_FILE`` setting, else from its systemd credential, read once here.

    The usual precedence decides between a key and its file (a flag beats ``.env``, which beats
    the environment); both in the same place is an error. The credential counts only when
    neither is set.
    """
    for name in ("signature_key", "ws_signature_key"):
        path = values.get(name + "_file")
        if path is not None:
            if name in values:
                ours, theirs = ranks[name + "_file"], ranks[name]
                if ours == theirs:
                    raise ConfigError(env_name(name + "_file"), path,
                                      f"{env_name(name)} is set too, in the same place: set one of them")
                if theirs < ours:
                    continue  # the key itself was given with higher precedence
            values[name] = read_key_file(path, env_name(name + "_file"), path)
            sources[name] = "key file"
        elif name not in values and environ.get(CREDENTIALS_DIRECTORY):
            path = os.path.join(environ[CREDENTIALS_DIRECTORY], credential_name(name))
            if os.path.lexists(path):
                values[name] = read_key_file(path, CREDENTIALS_DIRECTORY, path)
                sources[name] = "credential"


def read_key_file(path: str, variable: str, shown: str) -> str:
    """The key in ``path``, surrounding whitespace (the trailing newline) stripped.

    Raises:
        ConfigError: naming ``variable`` and ``shown`` (the path), never the file's content.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(variable, shown, f"cannot read the key file: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(variable, shown, f"larger than {MAX_KEY_FILE_BYTES // 1024} KiB: not a key file")
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(variable, shown, "the key file is not UTF-8 text") from None
    if not key:
        raise ConfigError(variable, shown, "the key file is empty")
    return key


def _check_together(s: Settings) -> None:
    """Refuse settings that contradict each other (each error names both variables)."""
    if s.ping_timeout >= s.ping_interval:
        raise ConfigError("OCTOHUB_PING_TIMEOUT", f"{s.ping_timeout:g}", f"must be below OCTOHUB_PING_INTERVAL ({s.ping_interval:g})")
    if s.hub_read_timeout and s.ping_interval >= s.hub_read_timeout:
        # Only ping frames extend the hub's read deadline (docs/protocol.md §4): an idle node would be
        # dropped before every keep-alive ping.
        raise ConfigError("OCTOHUB_PING_INTERVAL", f"{s.ping_interval:g}",
                          f"must be below OCTOHUB_HUB_READ_TIMEOUT ({s.hub_read_timeout:g}), the hub's read deadline "
                          "that only ping frames extend")
    if s.reconnect_max_interval < s.reconnect_interval:
        raise ConfigError(
            "OCTOHUB_RECONNECT_MAX_INTERVAL", f"{s.reconnect_max_interval:g}",
            f"must be >= OCTOHUB_RECONNECT_INTERVAL ({s.reconnect_interval:g})",
        )


def require_key(settings: Settings) -> None:
    """Raise :class:`ConfigError` unless the key the connect mode needs is set."""
    if settings.connect_mode == "direct":
        if not settings.ws_key:
            raise ConfigError("OCTOHUB_WS_SIGNATURE_KEY", None,
                              "direct mode signs the WebSocket URL with the WebSocket server's key: set "
                              "OCTOHUB_WS_SIGNATURE_KEY (or OCTOHUB_SIGNATURE_KEY) in .env or in the environment, "
                              "or OCTOHUB_WS_SIGNATURE_KEY_FILE, or the systemd credential octohub_ws_signature_key")
    elif not settings.signature_key:
        raise ConfigError("OCTOHUB_SIGNATURE_KEY", None,
                          "the hub's key is required: set it in .env or in the environment, or give "
                          "OCTOHUB_SIGNATURE_KEY_FILE or the systemd credential octohub_signature_key")
