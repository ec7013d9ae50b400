"""The admin pages at /admin: sign-in, sessions, throttled failures, the panel's data, and the
panel itself in Chromium."""

import http.client
import json

import pytest
import requests

from browser import run_e2e
from contract import unique
from harness import ADMIN_PASSWORD, CONTRACT_ENV, Server
from shardcast.admin import FAILURE_BUDGET, Admin
from shardcast.config import Config
from shardcast.http_messages import Request


def admin_server(**env: str) -> Server:
    return Server(2, {**CONTRACT_ENV, "SHARDCAST_ADMIN_SECRET": ADMIN_PASSWORD, **env}).start()


@pytest.fixture(scope="module")
def server():
    server = admin_server()
    yield server
    server.stop()


def sign_in(server: Server, password: str = ADMIN_PASSWORD, user: str = "admin"):
    session = requests.Session()
    session.trust_env = False
    response = session.post(server.api + "/admin/login", json={"user": user, "password": password})
    return session, response


def test_admin_redirects_to_the_sign_in_page(server):
    response = requests.get(server.api + "/admin", allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"
    page = requests.get(server.api + "/admin/login")
    assert page.status_code == 200 and "<form" in page.text


def test_sign_in_opens_the_panel_and_its_data(server):
    session, response = sign_in(server)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "shardcast admin" in session.get(server.api + "/admin").text
    stats = session.get(server.api + "/admin/admin.json").json()
    assert len(stats["shards"]) == 2
    assert "channels" in session.get(server.api + "/admin/channels.json").json()


def test_panel_channels_are_filtered_and_capped_by_the_server(server):
    session, _ = sign_in(server)
    tag = unique("Filtered")
    names = sorted(f"{tag}-{n}" for n in range(3))
    server.channel_config({name: {"notify_state": True} for name in names + [unique("other")]})
    found = session.get(server.api + "/admin/channels.json",
                        params={"filter": tag.upper()[:-2]}).json()
    assert list(found["channels"]) == names
    assert found["remaining"] == 0 and found["next"] is None


def test_admin_json_takes_a_signature_or_a_session_and_nothing_else(server):
    assert server.get("/admin/admin.json").status_code == 200          # signed
    assert requests.get(server.api + "/admin/admin.json").status_code == 403
    stranger = requests.Session()
    stranger.cookies.set("shardcast_admin", "made-up")
    assert stranger.get(server.api + "/admin/admin.json").status_code == 403
    assert stranger.get(server.api + "/admin/channels.json").status_code == 403


def test_wrong_password_is_refused(server):
    _, response = sign_in(server, password="wrong", user="someone")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.json()["error"]
    _, response = sign_in(server)   # under the free failures: not throttled
    assert response.status_code == 200


def test_lookup_finds_users_and_connections(server, open_ws):
    session, _ = sign_in(server)
    room, user = unique("room"), unique("u")
    answer = server.connect(user, [room], user_state={"mood": "fine"})
    open_ws(answer)
    found = session.get(server.api + "/admin/lookup.json", params={"q": user}).json()["user"]
    assert found["state"] == {"mood": "fine"}
    (conn,) = found["connections"]
    assert conn["conn_id"] == answer["conn_id"] and conn["channels"] == [room]
    assert conn["transport"] == "websocket"
    by_id = session.get(server.api + "/admin/lookup.json", params={"q": answer["conn_id"]})
    assert by_id.json()["connection"]["user"] == user
    missing = session.get(server.api + "/admin/lookup.json", params={"q": unique("nobody")})
    assert missing.status_code == 404


def test_sign_endpoint_gives_signatures_the_api_accepts(server):
    session, _ = sign_in(server)
    body = '{"info": {"include_history": false}}'
    signed = session.post(server.api + "/admin/sign.json",
                          json={"method": "POST", "target": "/info", "body": body}).json()
    response = requests.post(server.api + "/info", data=body,
                             headers={signed["header"]: signed["value"]})
    assert response.status_code == 200
    assert requests.post(server.api + "/admin/sign.json", json={}).status_code == 403


def test_sign_out_ends_the_session(server):
    session, _ = sign_in(server)
    session.post(server.api + "/admin/logout")
    assert session.get(server.api + "/admin/channels.json").status_code == 403


def test_failed_sign_ins_are_throttled():
    server = admin_server()
    try:
        statuses = [sign_in(server, password=f"guess {n}")[1].status_code for n in range(5)]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]
        _, response = sign_in(server)
        assert response.status_code == 429, "even the right password waits its turn"
        assert int(response.headers["retry-after"]) >= 1
    finally:
        server.stop()


def sign_in_from(server: Server, address: str, password: str) -> tuple[int, str | None]:
    """A sign-in whose packets come from ``address`` (any 127.x.y.z reaches loopback): the
    status and Retry-After."""
    connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10,
                                            source_address=(address, 0))
    try:
        connection.request("POST", "/admin/login", json.dumps(
            {"user": "admin", "password": password}), {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("retry-after")
    finally:
        connection.close()


def test_failed_sign_ins_from_many_addresses_share_one_budget():
    """Guesses spread over many addresses are bounded too, yet a browser that has signed in
    here before is still let in (its cookie says so): guessing cannot lock the admin out."""
    server = admin_server()
    try:
        known, response = sign_in(server)
        assert response.status_code == 200
        statuses = [sign_in_from(server, f"127.0.1.{n // 2 + 1}", f"guess {n}")[0]
                    for n in range(FAILURE_BUDGET)]
        assert set(statuses[:-1]) == {401}, "every address stays within its own free failures"
        assert statuses[-1] == 429, "the last failure the budget allows"
        status, retry_after = sign_in_from(server, "127.0.2.1", ADMIN_PASSWORD)
        assert status == 429 and int(retry_after) >= 1, "the budget is spent: everyone waits"
        response = known.post(server.api + "/admin/login",
                              json={"user": "admin", "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
    finally:
        server.stop()


CROSS_SITE = [{"origin": "http://evil.example"}, {"origin": "null"},
              {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}]


@pytest.mark.parametrize("headers", CROSS_SITE, ids=["origin", "null-origin", "cross-site",
                                                      "same-site"])
def test_admin_posts_from_other_sites_are_refused(server, headers):
    session, _ = sign_in(server)
    posts = [("/admin/login", {"user": "admin", "password": ADMIN_PASSWORD}),
             ("/admin/sign.json", {"method": "GET", "target": "/info", "body": ""}),
             ("/admin/admin.json", None), ("/admin/logout", None)]
    for path, body in posts:
        response = session.post(server.api + path, json=body, headers=headers)
        assert response.status_code == 403, path
    assert session.get(server.api + "/admin/channels.json").status_code == 200, "signed out"


def test_admin_posts_from_its_own_pages_are_served(server):
    session, _ = sign_in(server)
    own = {"origin": server.api, "sec-fetch-site": "same-origin"}
    signed = session.post(server.api + "/admin/sign.json", headers=own,
                          json={"method": "GET", "target": "/info", "body": ""})
    assert signed.status_code == 200
    assert session.post(server.api + "/admin/admin.json", headers=own).status_code == 200
    assert session.post(server.api + "/admin/admin.json",
                        headers={"origin": server.api}).status_code == 200


@pytest.mark.parametrize("path", ["/admin", "/admin/login", "/api-explorer"])
def test_admin_pages_refuse_frames_and_foreign_scripts(server, path):
    session, _ = sign_in(server)
    response = session.get(server.api + path)
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert "unsafe-inline" not in policy


@pytest.mark.parametrize(("setting", "certfile", "secure"), [
    ("auto", "", False), ("auto", "cert.pem", True), ("true", "", True), ("false", "cert.pem", False)])
def test_admin_cookie_is_secure_over_tls(setting, certfile, secure):
    config = Config(workers=1, admin_secret=ADMIN_PASSWORD, admin_cookie_secure=setting,
                    ssl_certfile=certfile, ssl_keyfile=certfile and "key.pem")
    body = json.dumps({"user": "admin", "password": ADMIN_PASSWORD}).encode()
    response = Admin(config, None).login(Request("POST", b"/admin/login", {}, body, "127.0.0.1"))
    assert response.status == 200
    assert ("; Secure" in response.headers["set-cookie"]) is secure


def test_sign_in_is_off_without_admin_secret(server3):
    response = requests.post(server3.api + "/admin/login", json={"user": "admin", "password": ""})
    assert response.status_code == 403
    assert "admin_secret" in response.json()["error"]


def test_admin_panel_in_chromium(server, tmp_path):
    run_e2e("admin.e2e.mjs", server, ADMIN_PASSWORD=ADMIN_PASSWORD,
            SCREENSHOT=str(tmp_path / "admin.png"))
    assert (tmp_path / "admin.png").stat().st_size > 10000
