"""/openapi.json (from the msgspec schemas the server validates with) and /api-explorer."""

import msgspec
import pytest
import requests
from openapi_spec_validator import validate

from browser import run_e2e
from harness import CONTRACT_ENV, Server
from shardcast import schemas
from shardcast.config import Config
from shardcast.http_api import HttpApi

ADMIN_PASSWORD = "explorer-pass"


@pytest.fixture(scope="module")
def server():
    server = Server(1, {**CONTRACT_ENV, "SHARDCAST_ADMIN_SECRET": ADMIN_PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def document(server):
    response = requests.get(server.api + "/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_api_route_and_method_is_documented(document):
    routes = HttpApi(Config(), None).routes
    documented = {(path, method.upper()) for path, methods in document["paths"].items()
                  for method in methods}
    served = {(path, method) for path, (methods, _) in routes.items() for method in methods}
    assert documented == served


def test_request_bodies_are_the_validating_schemas(document):
    components = document["components"]["schemas"]
    for struct in (schemas.ConnectBody, schemas.SubscribeBody, schemas.MessageItem,
                   schemas.EditItem, schemas.DeleteItem, schemas.UserStateBody,
                   schemas.ChannelConfig, schemas.InfoFlags):
        (expected,), _ = msgspec.json.schema_components([struct])
        name = expected["$ref"].rsplit("/", 1)[1]
        assert set(components[name]["properties"]) == set(struct.__struct_fields__), name
    connect = document["paths"]["/connect"]["post"]["requestBody"]["content"]
    assert connect["application/json"]["schema"] == {"$ref": "#/components/schemas/ConnectBody"}
    username = components["ConnectBody"]["properties"]["username"]
    assert username["maxLength"] == 512 and components["ConnectBody"]["required"] == ["username"]


def test_signed_endpoints_declare_both_signatures(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["signature"]["name"] == "x-shardcast-signature"
    assert schemes["compat"]["name"] == "x-channelstream-secret"
    assert document["paths"]["/listen"]["get"]["security"] == []


def test_explorer_is_served_locally(server):
    page = requests.get(server.api + "/api-explorer")
    assert page.status_code == 200 and "/static/swagger-ui/swagger-ui-bundle.js" in page.text
    assert "https://" not in page.text and "cdn" not in page.text.lower(), "no CDN: all local"
    bundle = requests.get(server.api + "/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100000


def test_explorer_sends_signed_requests_for_a_signed_in_admin(server):
    run_e2e("explorer.e2e.mjs", server, ADMIN_PASSWORD=ADMIN_PASSWORD)
