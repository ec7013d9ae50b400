"""/health and /ready for load balancers and service managers: unsigned, cheap, truthful."""

from __future__ import annotations

import os
import signal

import requests

from contract import wait_until
from processes import descendant_pids, pids_listening_on

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


def test_health_and_ready_are_in_the_openapi_document(server3):
    paths = requests.get(server3.api + "/openapi.json").json()["paths"]
    for path in ("/health", "/ready"):
        assert paths[path]["get"]["security"] == []
    assert "503" in paths["/ready"]["get"]["responses"]
