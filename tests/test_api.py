"""The API answer without a socket: which answers give a usable wsUrl, and the clock skew from Date."""
from __future__ import annotations

import pytest
import requests

from octohub_sync._transport.api_lookup import _skew, _ws_url
from octohub_sync.exceptions import ApiError


def test_ws_url_taken_from_a_good_answer() -> None:
    body = {"errcode": 0, "data": {"wsUrl": "ws://hub.example:8000/ws/node?pc_id=a"}}
    assert _ws_url(body, 200) == "ws://hub.example:8000/ws/node?pc_id=a"


def test_errcode_other_than_0_is_an_api_error_quoting_errmsg() -> None:
    with pytest.raises(ApiError, match="errcode 7: no such node") as info:
        _ws_url({"errcode": 7, "errmsg": "no such node"}, 200)
    assert info.value.status == 200
    with pytest.raises(ApiError, match=r"errcode None$"):
        _ws_url({}, 200)


@pytest.mark.parametrize("data", [
    None, "ws://h/ws", {}, {"wsUrl": 5}, {"wsUrl": "http://h:8000/ws/node"}, {"wsUrl": "ws:///ws/node"},
])
def test_answer_without_a_usable_ws_url(data: object) -> None:
    with pytest.raises(ApiError, match="no usable data.wsUrl"):
        _ws_url({"errcode": 0, "data": data}, 200)


def answer(date: str | None) -> requests.Response:
    response = requests.Response()
    if date is not None:
        response.headers["Date"] = date
    return response


def test_skew_from_the_date_header() -> None:
    # Date has 1 s resolution; the hub is 120 s ahead of a local clock read at 1632123456.
    assert _skew(answer("Mon, 20 Sep 2021 07:39:36 GMT"), started_wall=1632123456.0) == 120.0
    assert _skew(answer(None), started_wall=1632123456.0) is None  # unknown, not zero
    assert _skew(answer("yesterday"), started_wall=1632123456.0) is None


@pytest.mark.parametrize("how", ["server_port", "api_url"])
def test_the_websocket_port_as_the_apis_is_named_once_in_the_nodes_log(make_node, hub, caplog, how: str) -> None:
    import logging

    from .conftest import wait_until

    caplog.set_level(logging.INFO, logger="octohub_sync")
    # api_url: the ports differ from the settings' view, so the node knows it from the server's answer alone.
    where = {"server_port": hub.ws_port} if how == "server_port" else {"api_url": f"http://127.0.0.1:{hub.ws_port}"}
    client = make_node(**where, reconnect_interval=0.05, reconnect_max_interval=0.1)
    assert wait_until(lambda: client.stats()["connect_failures"] >= 3, 10)
    client.stop(5)
    failed = [r for r in caplog.records if "connection" in r.getMessage() and "failed" in r.getMessage()]
    told = [r for r in failed if r.levelno == logging.WARNING]
    assert len(told) == 1, [r.getMessage() for r in failed]  # news once; the repeats at INFO
    assert (f"API answered HTTP 404 with a JSON body without errcode - that is the WebSocket server (port {hub.ws_port}); "
            "OCTOHUB_SERVER_PORT is the API server's port") in told[0].getMessage()
