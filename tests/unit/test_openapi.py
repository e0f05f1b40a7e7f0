"""The one OpenAPI helper: an operation's parameters, body and error answers follow from its models, and every
service's document is valid OpenAPI 3.1."""

import importlib

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, Field

from shared.http import openapi_document
from shared.openapi import Spec


class Page(BaseModel):
    limit: int = Field(default=50, ge=1)
    after: str | None = None


class Thing(BaseModel):
    name: str = Field(min_length=1)


class Body(BaseModel):
    things: list[Thing]


def test_an_operations_error_answers_follow_from_what_it_takes():
    spec = Spec()
    spec.add("get", "/open", "no input", {"200": "ok"})
    spec.add("get", "/things", "a page", {"200": "ok"}, auth="things:read", query=Page)
    spec.add("post", "/things/{thing_id}", "a body", {"201": "made"}, auth="things:write", body=Body)
    # Any operation may find a server it needs away (503); the rest follows from what it takes.
    assert set(spec.paths["/open"]["get"]["responses"]) == {"200", "503"}
    assert set(spec.paths["/things"]["get"]["responses"]) == {"200", "400", "401", "403", "422", "503"}
    post = spec.paths["/things/{thing_id}"]["post"]
    assert set(post["responses"]) == {"201", "400", "401", "403", "413", "415", "422", "503"}
    assert post["security"] == [{"bearer": []}] and "things:write" in post["description"]
    assert post["parameters"] == [{"name": "thing_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    # The nested model is a component, referred to from the body's schema.
    assert spec.schemas["Thing"]["properties"]["name"]["minLength"] == 1
    assert post["requestBody"]["content"]["application/json"]["schema"]["properties"]["things"]["items"] == {
        "$ref": "#/components/schemas/Thing"
    }


def test_an_optional_query_parameter_is_not_required_and_has_no_null_branch():
    spec = Spec(always={"429": "slow down"})
    spec.add("get", "/things", "a page", {"200": "ok"}, query=Page)
    limit, after = spec.paths["/things"]["get"]["parameters"]
    assert limit == {"name": "limit", "in": "query", "required": False,
                     "schema": {"default": 50, "minimum": 1, "type": "integer"}}  # fmt: skip
    assert after == {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}}
    assert "429" in spec.paths["/things"]["get"]["responses"]


@pytest.mark.parametrize("service", ["intake", "keyvault", "notifier", "audit"])
def test_every_services_document_is_valid_openapi_3_1(service):
    module = importlib.import_module(f"services.{service}.openapi")
    spec: Spec = module.SPEC
    validate(openapi_document(title=service, description="d", paths=spec.paths, schemas=spec.schemas))
    for path, operations in spec.paths.items():
        for method, operation in operations.items():
            assert operation["responses"], f"{method} {path} documents no answer"
