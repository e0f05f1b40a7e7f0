"""The published AsyncAPI document: what the event models and the topology say, and valid AsyncAPI 3.0."""

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from ops import asyncapi
from shared import bus, events, topics, topology

# The official AsyncAPI 3.0.0 JSON Schema, vendored from npm @asyncapi/specs (see tests/schemas/README.md).
ASYNCAPI_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "asyncapi-3.0.0.json"
DOCUMENT_URI = "urn:lethe:asyncapi"


@cache
def committed() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    return document


def test_the_committed_document_is_what_the_models_and_the_topology_generate():
    expected = asyncapi.render(asyncapi.build())
    assert asyncapi.DOCUMENT.read_text(encoding="utf-8") == expected, "docs/asyncapi.yaml is stale: run make asyncapi"


def test_the_committed_document_is_valid_asyncapi_3():
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(committed()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors)


def test_every_reference_in_the_document_resolves():
    document = committed()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    resolver = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document)).resolver(DOCUMENT_URI)
    for ref in set(refs(document)):
        assert ref.startswith("#/"), f"{ref} points outside the document"
        resolver.lookup(ref)  # raises if the pointer leads nowhere


def test_every_event_topic_has_a_channel_at_its_address_and_a_dead_letter_twin():
    channels = committed()["channels"]
    for topic in topics.EVENT_TOPICS:
        assert channels[topic]["address"] == topic
        assert channels[topics.dlq(topic)]["address"] == topics.dlq(topic)


def test_every_event_model_has_a_message_on_its_own_topic():
    document = committed()
    for event_type, model in events.EVENT_TYPES.items():
        message = f"#/components/messages/{model.__name__}"
        assert message in [m["$ref"] for m in document["channels"][event_type]["messages"].values()]
        assert document["components"]["messages"][model.__name__]["payload"] == {
            "$ref": f"#/components/schemas/{model.__name__}"
        }


def test_every_producer_sends_and_every_consumer_receives_what_the_topology_says():
    operations = committed()["operations"]
    for flow in topology.FLOWS:
        for principal in flow.producers:
            assert operations[f"{principal}.send.{flow.topic}"]["action"] == "send"
        for principal in flow.consumers:
            assert operations[f"{principal}.receive.{flow.topic}"]["action"] == "receive"
        for principal in flow.watchers:
            assert operations[f"{principal}.watch.{flow.topic}"]["action"] == "receive"


def test_the_operations_are_exactly_what_the_bus_acls_allow_on_topics():
    document = committed()
    documented = {
        (op["tags"][0]["name"], op["action"], document["channels"][op["channel"]["$ref"].split("/")[-1]]["address"])
        for op in document["operations"].values()
    }
    allowed = {
        (g.principal, {"WRITE": "send", "READ": "receive"}[g.operation], g.name)
        for g in bus.grants()
        if g.resource == "TOPIC"
    }
    assert documented == allowed


def test_a_real_event_is_valid_against_its_message_payload_and_an_unknown_field_is_not():
    document = committed()
    registry = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document))
    event = events.DeletionPurged(
        request_id="req-1",
        subject_id="user-1",
        producer="purger",
        outcomes=(events.DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
    )
    payload = {"$ref": f"{DOCUMENT_URI}#/components/messages/DeletionPurged/payload"}
    validator = jsonschema.Draft202012Validator(payload, registry=registry, format_checker=jsonschema.FormatChecker())
    wire = json.loads(event.to_bytes())
    validator.validate(wire)
    assert not validator.is_valid(wire | {"unknown": 1})
    assert not validator.is_valid(wire | {"type": "deletion.requested"})


def test_the_check_command_accepts_the_committed_document():
    assert asyncapi.main(["--check"]) == 0
