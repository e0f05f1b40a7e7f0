"""notifier's OpenAPI operations, from the models api.py validates with (served at /openapi.json)."""

from __future__ import annotations

from services.notifier.api import EndpointPath, NewEndpoint, Page, RequestPath, Rotation
from shared.auth import WEBHOOKS_ADMIN
from shared.openapi import Spec

AUTH = f"scope {WEBHOOKS_ADMIN}"
ENDPOINT = "/webhooks/endpoints/{endpoint_id}"
SPEC = Spec()

SPEC.add(
    "post",
    "/webhooks/endpoints",
    "Register an endpoint; the answer holds its whsec_ secret",
    {"201": "registered"},
    auth=AUTH,
    body=NewEndpoint,
)
SPEC.add("get", "/webhooks/endpoints", "List endpoints", {"200": "a page of endpoints"}, auth=AUTH, query=Page)
SPEC.add("get", ENDPOINT, "One endpoint", {"200": "the endpoint", "404": "no such endpoint"}, auth=AUTH,
         path_params=EndpointPath)  # fmt: skip
SPEC.add("delete", ENDPOINT, "Delete an endpoint", {"204": "deleted", "404": "no such endpoint"}, auth=AUTH,
         path_params=EndpointPath)  # fmt: skip
SPEC.add(
    "post",
    f"{ENDPOINT}/rotate_secret",
    "Rotate the secret; old and new both sign during the overlap",
    {"200": "the new secret", "404": "no such endpoint"},
    auth=AUTH,
    path_params=EndpointPath,
    body=Rotation,
)
SPEC.add(
    "get",
    f"{ENDPOINT}/deliveries",
    "Deliveries to an endpoint, with attempts and response codes",
    {"200": "a page", "404": "no such endpoint"},
    auth=AUTH,
    path_params=EndpointPath,
    query=Page,
)
SPEC.add(
    "get",
    "/webhooks/requests/{request_id}",
    "What a deletion request's notices did: every webhook delivery (attempts, codes) and the person's mail",
    {"200": "the deliveries and the mail status (null before any notice)"},
    auth=AUTH,
    path_params=RequestPath,
)
SPEC.add(
    "post",
    f"{ENDPOINT}/deliveries/{{message_id}}/redeliver",
    "Deliver again (same webhook-id)",
    {"202": "scheduled", "404": "no such delivery"},
    auth=AUTH,
    path_params=EndpointPath,
)
