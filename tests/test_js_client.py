"""The browser client, clients/js/shardcast.js: its unit tests, and it in headless Chromium
against a real server (websocket, reconnect and re-subscribe, long-polling fallback and the
return to the websocket, heartbeats, disconnect)."""

import pytest

from browser import require, run_e2e, run_node
from harness import CONTRACT_ENV, REPO_ROOT, Server


@pytest.fixture(scope="module")
def silent_server():
    """No [] heartbeats from the server, idle connections collected after 3 s."""
    server = Server(2, {**CONTRACT_ENV, "SHARDCAST_GC_CONNS_AFTER": "3",
                        "SHARDCAST_HEARTBEAT_INTERVAL": "600"}).start()
    yield server
    server.stop()


def test_js_client_unit_tests():
    require(need_browser=False)
    output = run_node(["--test", "test/"], cwd=REPO_ROOT / "clients" / "js")
    assert "# fail 0" in output


def test_server_serves_the_client_from_the_package(silent_server):
    response = silent_server.get("/static/shardcast.js", sign=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.content == (REPO_ROOT / "clients" / "js" / "shardcast.js").read_bytes()


def test_js_client_in_chromium(silent_server):
    run_e2e("js_client.e2e.mjs", silent_server)
