"""Every service's OpenAPI operations, from the same pydantic models that validate its requests.

A service builds one :class:`Spec`, adds each operation with the models of its path, query and body, and hands
``spec.paths`` and ``spec.schemas`` to :func:`shared.http.openapi_document`. The error answers every operation may
give follow from what it takes (a token: 401/403; parameters: 400/422; a body: 400/413/415/422), so no route
documents them by hand and none forgets one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

Schema = dict[str, Any]
REF = "#/components/schemas/{model}"

AUTH_ERRORS = {"401": "missing or invalid token", "403": "the token lacks the right"}
PARAM_ERRORS = {
    "400": "a malformed request, e.g. a request line over 8 KiB",
    "422": "a parameter is malformed; the body names it",
}
BODY_ERRORS = {
    "400": "the body is not JSON",
    "413": "the body is too large",
    "415": "the body is not of a supported type",
    "422": "the body is invalid; the answer names the field",
}


def _param(schema: Schema) -> Schema:
    """A parameter's schema: an optional one is simply not required (a URL cannot carry null), so its ``null``
    branch goes; the title pydantic adds repeats the name."""
    schema = {k: v for k, v in schema.items() if k != "title"}
    branches = schema.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        schema.pop("anyOf")
        schema = {**rest[0], **schema} if len(rest) == 1 else {**schema, "anyOf": rest}
        if schema.get("default", 0) is None:
            schema.pop("default")
    return schema


class Spec:
    """The operations of one service's API and the schemas they refer to."""

    def __init__(self, *, always: Mapping[str, str] | None = None) -> None:
        self.paths: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Schema] = {}
        self._always = dict(always or {})  # answers any operation may give (e.g. 429 under a rate limit)

    def schema(self, model: type[BaseModel] | TypeAdapter[Any]) -> Schema:
        """The JSON Schema of a model or type, its nested models moved to ``components.schemas``."""
        if isinstance(model, TypeAdapter):
            found = model.json_schema(ref_template=REF)
        else:
            found = model.model_json_schema(ref_template=REF)
        self.schemas.update(found.pop("$defs", {}))
        return found

    def _params(self, where: str, model: type[BaseModel]) -> list[Schema]:
        found = self.schema(model)
        required = set(found.get("required", ()))
        return [
            {"name": name, "in": where, "required": where == "path" or name in required, "schema": _param(schema)}
            for name, schema in found.get("properties", {}).items()
        ]

    def add(
        self,
        method: str,
        path: str,
        summary: str,
        responses: Mapping[str, str],
        *,
        auth: str | None = None,
        path_params: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        headers: Mapping[str, Schema] | None = None,
        body: type[BaseModel] | None = None,
        form: bool = False,
    ) -> None:
        """One operation. Path parameters are those of ``path``, typed by ``path_params`` (strings without it);
        ``auth`` names the scopes a token needs."""
        in_path = re.findall(r"{(\w+)}", path)
        modelled = {p["name"]: p for p in self._params("path", path_params)} if path_params else {}
        default: Schema = {"type": "string"}
        params = [modelled.get(n) or {"name": n, "in": "path", "required": True, "schema": default} for n in in_path]
        params += self._params("query", query) if query else []
        params += [{"name": n, "in": "header", "required": False, "schema": s} for n, s in (headers or {}).items()]
        codes = {"503": "a server this needs does not answer; retry (Retry-After)", **self._always}
        operation: dict[str, Any] = {"summary": summary, "parameters": params}
        if params:
            codes |= PARAM_ERRORS
        if auth is not None:
            operation |= {"description": f"Needs a bearer token with {auth}.", "security": [{"bearer": []}]}
            codes |= AUTH_ERRORS
        if body is not None:
            codes |= BODY_ERRORS
            content = {"application/json": {"schema": self.schema(body)}}
            if form:
                content["application/x-www-form-urlencoded"] = {"schema": self.schema(body)}
            operation["requestBody"] = {"required": True, "content": content}
        codes |= responses
        operation["responses"] = {code: {"description": text} for code, text in sorted(codes.items())}
        self.paths.setdefault(path, {})[method] = operation
