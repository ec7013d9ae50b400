"""TLS on the API and websocket ports (ssl_certfile, ssl_keyfile), with a self-signed certificate
made for the test."""

from __future__ import annotations

import json
import ssl
import subprocess

import pytest
import requests
import rawws
from contract import unique
from harness import Server
from shardcast.config import ConfigError, load_config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate):
    cert, key = certificate
    server = Server(2, env={"SHARDCAST_SSL_CERTFILE": cert, "SHARDCAST_SSL_KEYFILE": key})
    server.api = server.api.replace("http://", "https://")
    server.session.verify = cert
    server.start()
    yield server
    server.stop()


def test_api_answers_over_tls(tls_server):
    assert tls_server.get("/health", sign=False).json() == {"status": "ok"}


def test_plain_http_is_not_answered(tls_server):
    with pytest.raises(requests.ConnectionError):
        requests.get(tls_server.api.replace("https://", "http://") + "/health", timeout=5)


def test_websockets_are_served_over_tls(tls_server, certificate):
    channel = unique("secure")
    reply = tls_server.connect(unique("alice"), [channel])
    assert reply["ws_url"].startswith("wss://127.0.0.1:")
    context = ssl.create_default_context(cafile=certificate[0])
    with rawws.handshake(reply["ws_url"], context=context) as sock:
        posted = tls_server.say(channel, "over tls")
        stream, frames = b"", []
        while not frames:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {stream!r}"
            stream += chunk
            frames, _ = rawws.parse_frames(stream)
        assert frames[0].opcode == rawws.TEXT
        assert [envelope["uuid"] for envelope in json.loads(frames[0].payload)] == [posted["uuid"]]


def test_certificate_and_key_go_together():
    with pytest.raises(ConfigError, match="ssl_keyfile"):
        load_config(None, {"ssl_certfile": "/etc/ssl/cert.pem"}, environ={})


def test_unusable_certificate_stops_the_server_at_start(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    server = Server(1, env={"SHARDCAST_SSL_CERTFILE": str(bogus),
                            "SHARDCAST_SSL_KEYFILE": str(bogus)})
    with pytest.raises(RuntimeError, match="cannot use ssl_certfile and ssl_keyfile"):
        server.start()
