"""MkDocs hooks: the site's front page is README.md, and the settings reference is generated from the settings.

Why hooks and not copies: the README is the front door on GitHub and on the package index, and
``octohub_sync``'s settings carry their own defaults and descriptions; a copy of either in docs/
would drift. The build reads both sources each time instead:

- ``index.md``, the site's front page, is README.md, its links turned into links of the site;
- ``<!-- settings-reference -->`` in a page (configuration.md) becomes a section per setting;
- a link of a page to a file outside docs/ (``../examples/...``) becomes text naming that file,
  since the site holds only docs/.

``python docs/hooks/site.py`` prints the settings reference, for a reader of docs/ outside the site.
This module imports no part of MkDocs at its top, so that the tests can load it without the docs extra.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

# The one import that says where the settings are defined (change it if that module moves).
from octohub_sync._config import settings as settings_source

ROOT = Path(__file__).resolve().parents[2]

#: Where a page asks for the reference of every setting.
SETTINGS_MARKER = "<!-- settings-reference -->"

#: The guide that says more about a setting. A name that is not a setting fails the build.
GUIDES = {
    "proxy": "proxies.md",
    "signature_key_file": "running-nodes.md#the-key-a-file-or-a-systemd-credential-not-the-environment",
    "ws_signature_key_file": "running-nodes.md#the-key-a-file-or-a-systemd-credential-not-the-environment",
    "tls": "tls.md",
    "ca_file": "tls.md",
    "tls_insecure": "tls.md",
    "ws_host": "tls.md",
    "connect_timeout": "tls.md",
    "instance": "running-nodes.md#several-nodes-on-one-host-octohub-nodeservice",
    "reconnect_interval": "guarantees.md",
    "stable_after": "guarantees.md",
    "max_reconnect_attempts": "guarantees.md",
    "ping_interval": "guarantees.md",
    "hub_read_timeout": "running-nodes.md#the-go-server-forgets-a-node-after-a-dead-path",
    "max_pending": "guarantees.md",
    "task_timeout": "long-tasks.md",
    "cancel_grace": "long-tasks.md",
    "progress_interval": "long-tasks.md",
    "shutdown_timeout": "guarantees.md",
    "outbox_size": "guarantees.md",
    "result_cache_size": "crash-safety.md",
    "state_dir": "crash-safety.md",
    "max_tasks": "recycling.md",
    "max_memory": "recycling.md",
    "max_uptime": "recycling.md",
    "max_message_bytes": "tls.md",
    "max_result_bytes": "guarantees.md",
    "log_task_errors": "guarantees.md",
    "status_interval": "observability.md",
    "metrics_port": "observability.md",
    "metrics_host": "observability.md",
    "app": "index.md#a-module-of-handlers-is-a-node-app",
}

#: What a setting's kind of value accepts, in words (an unknown kind is shown as its name).
ACCEPTS = {
    "str": "text", "port": "port, 1-65535", "port0": "port, 0 = off", "url": "http(s)://host[:port]",
    "mode": "`api` or `direct`", "bool": "true/false, 1/0, yes/no, on/off", "cafile": "an existing file of PEM certificates",
    "path": "a file", "name": "1-64 of `A-Z a-z 0-9 _ . -`", "float>0": "number > 0",
    "float>=0": "number >= 0", "int>=0": "whole number >= 0", "int>=1": "whole number >= 1",
    "level": "a log level", "errorlog": "`text` or `type`", "statedir": "a directory, or `off`",
    "proxy": "a proxy URL, or `none`", "app": "`module` or `module:function`",
    "host": "a host name or IP address (`::1` or `[::1]`), no scheme, port or path",
    "wshost": "a host name or IP address, no scheme, port or path",
    "metricshost": "an IP address or host name, no port",
}

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_SETTING = re.compile(r"\bOCTOHUB_[A-Z0-9_]+\b")


def default_text(value: Any) -> str:
    """A setting's default as the reference shows it: ``(unset)`` for none, ``false``, ``30`` for 30.0."""
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def page_title(target: str) -> str:
    """The title of a page of docs/ (its first line, ``# Title``); the README's is "README"."""
    page = target.split("#", 1)[0]
    if page == "index.md":
        return "README"
    return (ROOT / "docs" / page).read_text(encoding="utf-8").split("\n", 1)[0].lstrip("# ")


def settings_reference() -> str:
    """Every setting as a section of Markdown, from the settings' definitions, in their order.

    A heading per setting, as Django's settings reference has: ``#octohub_max_workers`` is its anchor.
    """
    names = settings_source.setting_names()
    unknown = sorted(set(GUIDES) - set(names))
    if unknown:
        raise ValueError(f"docs/hooks/site.py: GUIDES names no setting: {', '.join(unknown)}")
    sections = []
    for f in fields(settings_source.Settings):
        if f.name not in names:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        meaning = _SETTING.sub(lambda m: f"`{m.group(0)}`", settings_source.setting_help(f.name))
        kind = f.metadata["kind"]
        facts = [f"Default: {default_text(default)}", f"accepts: {ACCEPTS.get(kind, kind)}",
                 f"flag: `--{f.name.replace('_', '-')}`"]
        if f.name in GUIDES:
            facts.append(f"more in [{page_title(GUIDES[f.name])}]({GUIDES[f.name]})")
        sections.append(f"### `{settings_source.env_name(f.name)}`\n\n{meaning}.\n\n"
                        f"{'; '.join(facts)}.\n")
    return "\n".join(sections)


def site_links(markdown: str, source_dir: str, page_dir: str) -> str:
    """Links of a page whose source is in ``source_dir`` of the repository, as the site needs them.

    A link into docs/ points at that page of the site, one to README.md at the front page, one to
    any other file of the repository becomes its label and the file's path (not in the site).
    """
    def link(match: re.Match) -> str:
        label, target = match.groups()
        if re.match(r"^(https?:|mailto:|#)", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        full = posixpath.normpath(posixpath.join(source_dir, path))
        if full == "README.md":
            full = "docs/index.md"
        if not full.startswith("docs/"):
            return label if full in label else f"{label} (`{full}` in the repository)"
        new = posixpath.relpath(full[len("docs/"):], page_dir or ".")
        return f"[{label}]({new}{'#' + anchor if anchor else ''})"
    return _LINK.sub(link, markdown)


def on_files(files: Any, config: Any) -> Any:
    """Add the front page, README.md, to the site's files."""
    from mkdocs.structure.files import File

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=readme))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Links made the site's; the settings reference where a page asks for it."""
    src = page.file.src_uri
    source_dir = "" if src == "index.md" else posixpath.join("docs", posixpath.dirname(src))
    markdown = site_links(markdown, source_dir, posixpath.dirname(src))
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_reference())
    return markdown


if __name__ == "__main__":
    print(settings_reference(), end="")
