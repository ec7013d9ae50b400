"""/health and /ready for load balancers and service managers: unsigned, cheap, truthful."""

from __future__ import annotations

import os
import signal
import time

import requests

from contract import wait_until
from harness import conn_id_on, owned_by
from processes import descendant_pids, pids_listening_on
from shardcast.shards import REQUEST_TIMEOUT
from shardcast.worker import MESH_TIMEOUT

STALLED = 1


def test_health_answers_without_signature(server3):
    response = server3.get("/health", sign=False)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_every_shard_answers(server3):
    response = server3.get("/ready", sign=False)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "shards": server3.workers}


def not_ready(server) -> dict | None:
    response = server.get("/ready", sign=False)
    return response.json() if response.status_code == 503 else None


def test_ready_is_503_naming_a_shard_that_does_not_answer(server3):
    (pid,) = pids_listening_on(server3.ws_ports[STALLED], descendant_pids(server3.process.pid))
    os.kill(pid, signal.SIGSTOP)
    try:        # the answer of a second ago may be given once more
        answer = wait_until(lambda: not_ready(server3), timeout=5)
        assert answer == {"status": "not ready", "down": {str(STALLED): "not answering"}}
        assert server3.get("/health", sign=False).status_code == 200     # alive all the same
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: server3.get("/ready", sign=False).status_code == 200, timeout=5)


def test_connect_is_503_naming_a_peer_shard_that_does_not_answer(server3):
    """The connection's shard asks the user's owner, which is stopped: it gives up after
    MESH_TIMEOUT, before the API process would, undoes its side and names the silent shard."""
    username, conn_id = owned_by(STALLED, 3, "u"), conn_id_on(STALLED - 1, 3)
    (pid,) = pids_listening_on(server3.ws_ports[STALLED], descendant_pids(server3.process.pid))
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = server3.post("/connect", {"username": username, "conn_id": conn_id,
                                             "channels": [owned_by(STALLED - 1, 3, "c")]},
                                timeout=REQUEST_TIMEOUT + 5)
        waited = time.monotonic() - started
        assert not server3.is_connected(conn_id)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert response.status_code == 503
    assert response.json() == {"shard": [f"Shard {STALLED} is unavailable; retry"]}
    assert MESH_TIMEOUT - 0.1 <= waited < REQUEST_TIMEOUT
    server3.connect(username, conn_id=conn_id)      # once it answers again, all is well


def test_health_and_ready_are_in_the_openapi_document(server3):
    paths = requests.get(server3.api + "/openapi.json").json()["paths"]
    for path in ("/health", "/ready"):
        assert paths[path]["get"]["security"] == []
    assert "503" in paths["/ready"]["get"]["responses"]
