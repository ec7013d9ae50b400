"""`shardcast demo`, started as a newcomer would, then used by two people in Chromium."""

import struct
import subprocess
import sys
import time

import pytest
import requests

from browser import run_e2e
from harness import REPO_ROOT, STARTUP_TIMEOUT
from processes import free_port, free_port_range, stop_tree

MIN_SCREENSHOT_BYTES = 20000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    port, api_port = free_port(), free_port()
    ws_base = free_port_range(2)
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "shardcast", "demo", "--port", str(port), "--api-port",
             str(api_port), "--ws-port-base", str(ws_base), "--workers", "2"],
            cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        assert process.poll() is None, f"the demo exited:\n{log.read_text()}"
        try:
            if requests.get(url + "/", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"the demo did not start:\n{log.read_text()}"
        time.sleep(0.2)
    yield url
    stop_tree(process)
    assert "open http://127.0.0.1" in log.read_text()


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE), "not a PNG file"
    return struct.unpack(">II", data[16:24])


def test_two_people_chat_in_chromium(demo, tmp_path):
    screenshot = tmp_path / "demo.png"
    run_e2e("demo.e2e.mjs", DEMO_URL=demo + "/", SCREENSHOT=str(screenshot))
    data = screenshot.read_bytes()
    assert png_size(data) == (1280, 760)
    assert len(data) > MIN_SCREENSHOT_BYTES, "the screenshot is nearly blank"


def test_demo_backend_checks_who_asks(demo):
    session = requests.Session()
    bad = session.post(demo + "/api/connect", json={"username": "<script>"})
    assert bad.status_code == 400 and "pick a name" in bad.json()["error"]
    assert session.post(demo + "/api/message", json={"channel": "lobby", "text": "x"}
                        ).status_code == 401
    answer = session.post(demo + "/api/connect", json={"username": "mallory"}).json()
    assert answer["channels"] == ["lobby"] and answer["ws_url"].startswith("ws://")
    posted = session.post(demo + "/api/message", json={"channel": "lobby", "text": "mine"})
    assert posted.status_code == 200
    other = requests.Session()
    other.post(demo + "/api/connect", json={"username": "trent"})
    edit = other.patch(demo + "/api/message", json={"uuid": posted.json()["uuid"],
                                                    "channel": "lobby", "text": "yours now"})
    assert edit.status_code == 403
    steal = other.post(demo + "/api/subscribe", json={"conn_id": answer["conn_id"],
                                                      "channels": ["help"]})
    assert steal.status_code == 403
