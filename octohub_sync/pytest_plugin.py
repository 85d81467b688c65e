"""The pytest plugin (entry point ``pytest11``): fixtures to test your handlers against a real hub.

Fixtures:

- ``octohub_hub``: a :class:`~octohub_sync.hub.LocalHub` on 127.0.0.1, ports chosen by the
  system, a fresh random key; stopped after the test.
- ``octohub_node``: a :class:`~octohub_sync.testing.LocalNode` connected to it and ready,
  serving ``octohub_app``; stopped after the test.
- ``octohub_make_node(app=..., **settings)``: more nodes, or one with other settings.
- ``octohub_app``: what the nodes serve: ``octohub_app = mypackage.tasks`` in the pytest
  configuration (ini), ``--octohub-app``, or your own fixture returning a module name or a
  ``setup(client)`` function. None: only the built-in handlers.
- ``octohub_settings``: settings of every node made here (override the fixture to change them).

pytest imports this module in every run of every project that installed octohub_sync, so it
imports nothing at import time beyond pytest: the hub (and ``websockets``) only when a fixture runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Union

import pytest

if TYPE_CHECKING:
    from octohub_sync.hub import LocalHub
    from octohub_sync.testing import LocalNode

APP_HELP = "module or module:function whose handlers the octohub_node fixture serves (as octohub-node --app)"

#: ``octohub_make_node(app=...)`` left out: serve what the ``octohub_app`` fixture says.
_FROM_FIXTURE: Any = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("octohub_app", APP_HELP, default=None)
    parser.getgroup("octohub").addoption("--octohub-app", dest="octohub_app", metavar="APP", help=APP_HELP)


@pytest.fixture
def octohub_app(request: pytest.FixtureRequest) -> Union[str, Callable[..., None], None]:
    """The app the nodes serve (``--octohub-app`` > ``octohub_app`` ini value > None)."""
    return request.config.getoption("octohub_app") or request.config.getini("octohub_app") or None


@pytest.fixture
def octohub_settings() -> Dict[str, Any]:
    """Settings (by field name) of every node the fixtures make, beating the fast test defaults."""
    return {}


@pytest.fixture
def octohub_hub() -> Iterator["LocalHub"]:
    """A running local hub on 127.0.0.1 (API and WebSocket ports chosen by the system)."""
    import secrets

    try:
        from octohub_sync.hub import LocalHub
    except ImportError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # outside the except block: one clear line, not a chain of two tracebacks
        pytest.fail(f"the octohub fixtures need the local hub: pip install 'octohub_sync[testing]' ({missing})",
                    pytrace=False)
    with LocalHub(secrets.token_hex(16), host="127.0.0.1") as hub:
        yield hub


@pytest.fixture
def octohub_make_node(octohub_hub: "LocalHub", octohub_app: Any,
                      octohub_settings: Dict[str, Any]) -> Iterator[Callable[..., "LocalNode"]]:
    """Make nodes connected to ``octohub_hub``: ``octohub_make_node(app=None, start=True, **settings)``."""
    from octohub_sync.testing import make_local_node

    made: List["LocalNode"] = []

    def make(app: Any = _FROM_FIXTURE, *, start: bool = True, **settings: Any) -> "LocalNode":
        node = make_local_node(octohub_hub, octohub_app if app is _FROM_FIXTURE else app, start=start,
                               **{**octohub_settings, **settings})
        made.append(node)
        return node

    yield make
    for node in made:
        node.client.stop(timeout=5)


@pytest.fixture
def octohub_node(octohub_make_node: Callable[..., "LocalNode"]) -> "LocalNode":
    """A node connected to ``octohub_hub`` and ready, serving ``octohub_app``."""
    return octohub_make_node()
