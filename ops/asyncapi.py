"""Generates docs/asyncapi.yaml, lethe's published Kafka contracts, from the event models and the topology.

``python -m ops.asyncapi --write`` rewrites the document (``make asyncapi``); ``--check`` exits 1 when the committed
document is not what the models and ``shared/topology.py`` say. tests/unit/test_asyncapi.py makes the same comparison.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from shared import events, topics, topology
from shared.settings import KafkaSettings

ROOT: Final = Path(__file__).resolve().parent.parent
DOCUMENT: Final = ROOT / "docs" / "asyncapi.yaml"
ASYNCAPI_VERSION: Final = "3.0.0"
KAFKA_BINDING: Final = "0.5.0"
LOCAL_BROKER: Final = "127.0.0.1:9092"
SECURITY_SCHEME: Final = "scramSha512"
DEAD_LETTER: Final = "DeadLetter"
# Every message model's schema, and every model it nests, is hoisted into components/schemas: a "#/$defs/..."
# reference left inside a payload would resolve against the document's root, where there is no $defs.
SCHEMA_REF: Final = "#/components/schemas/{model}"
# topology.py: "audit reads every dead-letter topic (the console lists them)".
DLQ_READERS: Final = ("audit",)
# The headers shared/consumer.py (MessageProcessor._dead_letter) puts on every dead letter, all UTF-8 text.
DLQ_HEADERS: Final = {
    "error": {
        "type": "string",
        "maxLength": 4000,
        "description": "Why it can never succeed (scrubbed of personal data).",
    },
    "error_type": {
        "type": "string",
        "description": "InvalidEventError, NoHandlerError, or the class of the exception the handler raised.",
    },
    "original_topic": {"type": "string", "description": "The topic the message was read from."},
    "original_partition": {"type": "string", "pattern": "^[0-9]+$", "description": "Its partition, in decimal."},
    "original_offset": {"type": "string", "pattern": "^[0-9]+$", "description": "Its offset, in decimal."},
}
KEY_DESCRIPTIONS: Final = {
    "subject_id": "The subject id, so that one person's events share a partition and stay in order "
    "(an event without a subject is keyed by its request id, or else by its event id).",
}
HEADER: Final = (
    "# lethe's Kafka contracts. Generated from shared/events.py and shared/topology.py by `make asyncapi`\n"
    "# (python -m ops.asyncapi --write): do not edit by hand; tests/unit/test_asyncapi.py fails when it is stale.\n"
)
INFO: Final = """\
Every Kafka topic of lethe: its key, its messages, and which principal writes and reads it.

Messages are JSON. Every event carries the envelope `event_id`, `type` (the name of its topic), `schema_version`,
`occurred_at` (UTC), `request_id`, `subject_id` and `producer`; a consumer rejects unknown fields and sends the
message to the topic's dead-letter twin. Payload schemas are the JSON Schema of the pydantic models in
`shared/events.py`, in validation mode: what a consumer accepts.

A principal is a service (each has its own Kafka user) or `upstream`, the product's backends that ask for
deletions. Operation ids read `<principal>.<send|receive|watch>.<topic>`; the broker's ACLs allow each principal
exactly these operations. `watch` reads without a consumer group, so that every process sees every event.
"""


def contracts() -> dict[str, type[events.Event]]:
    """Every message model by the topic it is published on (the intent command included)."""
    return dict(events.EVENT_TYPES)


def build() -> dict[str, Any]:
    """The AsyncAPI document, as plain data in the order it is written."""
    models = contracts()
    flows = _flows(models)
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {DEAD_LETTER: _dead_letter()}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for flow in flows:
        model = models[flow.topic]
        schemas.update(_hoisted(model, schemas))
        messages[model.__name__] = _message(model, flow)
        channels[flow.topic] = _channel(flow, model.__name__)
        operations.update(_operations(flow, model.__name__))
    for flow in flows:
        if _dead_letterers(flow):
            channels[topics.dlq(flow.topic)] = _dead_letter_channel(flow)
            operations.update(_dead_letter_operations(flow))
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "lethe", "version": _version(), "description": INFO},
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": LOCAL_BROKER,
                "protocol": "kafka",
                "title": "The local stack's broker",
                "description": "Kafka as `make up` starts it. Clients authenticate with SASL/SCRAM-SHA-512 over "
                "SASL_PLAINTEXT, each as its own principal.",
                "security": [{"$ref": f"#/components/securitySchemes/{SECURITY_SCHEME}"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": dict(sorted(messages.items())),
            "securitySchemes": {SECURITY_SCHEME: _security_scheme()},
        },
    }


def render(document: dict[str, Any]) -> str:
    """Stable YAML: the document's own order (meaningful: the flow, the envelope first), no anchors, block text."""
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.asyncapi", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"write {DOCUMENT.relative_to(ROOT)}")
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed document differs")
    args = parser.parse_args(argv)
    text = render(build())
    if args.write:
        DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
        DOCUMENT.write_text(text, encoding="utf-8")
        return 0
    if not DOCUMENT.is_file() or DOCUMENT.read_text(encoding="utf-8") != text:
        sys.stderr.write(f"{DOCUMENT.relative_to(ROOT)} does not match the event models: run `make asyncapi`\n")
        return 1
    return 0


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        # One key schema reused by many messages would otherwise become &id001 anchors: legal, but unreadable.
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def _flows(models: dict[str, type[events.Event]]) -> tuple[topology.Flow, ...]:
    """The topology's flows, after checking that every topic and every model has its flow and every flow a model."""
    flows = topology.FLOWS
    declared = {f.topic for f in flows}
    if missing := (set(topics.EVENT_TOPICS) | set(models)) - declared:
        raise LookupError(f"shared/topology.py declares no flow for {sorted(missing)}")
    if unmodelled := declared - set(models):
        raise LookupError(f"shared/events.py has no model for {sorted(unmodelled)}")
    return flows


def _hoisted(model: type[events.Event], schemas: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema and those of the models it nests, by name; a name may not mean two schemas."""
    schema = model.model_json_schema(ref_template=SCHEMA_REF, mode="validation")
    found: dict[str, Any] = {**schema.pop("$defs", {}), model.__name__: schema}
    for name, sub in found.items():
        if schemas.get(name, sub) != sub:
            raise ValueError(f"two different schemas are named {name!r}")
    return found


def _message(model: type[events.Event], flow: topology.Flow) -> dict[str, Any]:
    title = _title(model.__name__)
    summary, description = _docstring(model)
    message: dict[str, Any] = {
        "name": model.__name__,
        "title": title,
        "summary": summary or f"{title}, published on `{flow.topic}` by {_and(flow.producers)}.",
    }
    if description:
        message["description"] = description
    message["payload"] = {"$ref": SCHEMA_REF.format(model=model.__name__)}
    if model.model_fields["request_id"].is_required():
        message["correlationId"] = {
            "description": "The deletion request this event is about.",
            "location": "$message.payload#/request_id",
        }
    message["bindings"] = {"kafka": {"key": _key(flow.key), "bindingVersion": KAFKA_BINDING}}
    return message


def _channel(flow: topology.Flow, message: str) -> dict[str, Any]:
    readers = f"read by {_and(flow.consumers)} (a consumer group each)" if flow.consumers else "read by no service"
    if flow.watchers:
        readers += f" and watched by {_and(flow.watchers)} (every process, without a group)"
    return {
        "address": flow.topic,
        "title": flow.topic,
        "description": f"Written by {_and(flow.producers)}; {readers}. Keyed by the {flow.key.replace('_', ' ')}.",
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": {"partitions": topics.PARTITIONS, "bindingVersion": KAFKA_BINDING}},
    }


def _operations(flow: topology.Flow, message: str) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for principal in flow.producers:
        summary = f"{principal} publishes `{flow.topic}`."
        ops[f"{principal}.send.{flow.topic}"] = _operation(principal, "send", flow.topic, message, summary)
    for principal in flow.consumers:
        summary = f"{principal} consumes `{flow.topic}` in its consumer group."
        ops[f"{principal}.receive.{flow.topic}"] = _operation(
            principal, "receive", flow.topic, message, summary, group=_group(principal)
        )
    for principal in flow.watchers:
        summary = f"Every {principal} process reads `{flow.topic}` without a consumer group (its key cache forgets)."
        ops[f"{principal}.watch.{flow.topic}"] = _operation(principal, "receive", flow.topic, message, summary)
    return ops


def _group(principal: str) -> dict[str, Any]:
    """The consumer group a principal reads in, as a schema (the operation's Kafka binding)."""
    if principal == topology.UPSTREAM:
        # shared/bus.py grants the upstream principal the groups whose name starts with "upstream".
        return {
            "type": "string",
            "pattern": f"^{topology.UPSTREAM}",
            "description": f"The upstream service's own group; its name starts with `{topology.UPSTREAM}`.",
        }
    return {
        "type": "string",
        "pattern": f"-{principal}$",
        "default": KafkaSettings.model_construct().group_of(principal),
        "description": f"`<LETHE_KAFKA_GROUP_PREFIX>-{principal}`.",
    }


def _operation(
    principal: str, action: str, channel: str, message: str, summary: str, *, group: dict[str, Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{_pointer(channel)}"},
        "messages": [{"$ref": f"#/channels/{_pointer(channel)}/messages/{message}"}],
        "summary": summary,
        "tags": [{"name": principal}],
    }
    if group is not None:
        operation["bindings"] = {"kafka": {"groupId": group, "bindingVersion": KAFKA_BINDING}}
    return operation


def _security_scheme() -> dict[str, Any]:
    services = ", ".join(topology.SERVICES)
    return {
        "type": SECURITY_SCHEME,
        "description": f"SASL/SCRAM-SHA-512. Every service is its own principal ({services}); upstream backends "
        f"share `{topology.UPSTREAM}`. ACLs let a principal write only the topics it produces and read only those it "
        "consumes: the operations of this document.",
    }


def _dead_letter() -> dict[str, Any]:
    return {
        "name": DEAD_LETTER,
        "title": "Dead letter",
        "summary": "A message that its consumer can never process, byte for byte, with the reason in its headers.",
        "description": "Written by the consumer loop (shared/consumer.py) of the service that read the message: "
        "invalid at once, a handler's PermanentError at once, any other failure after its retries. Key and value "
        "are the original message's, unchanged: the value may be any bytes, not only a valid event.",
        "contentType": "application/octet-stream",
        "headers": {"type": "object", "required": list(DLQ_HEADERS), "properties": DLQ_HEADERS},
        "payload": {"description": "The original message value, unchanged."},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original message's key, unchanged."},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _dead_letterers(flow: topology.Flow) -> tuple[str, ...]:
    """The services that consume the topic: each dead-letters what it can never process (upstream does not)."""
    return tuple(p for p in flow.consumers if p != topology.UPSTREAM)


def _dead_letter_channel(flow: topology.Flow) -> dict[str, Any]:
    address = topics.dlq(flow.topic)
    return {
        "address": address,
        "title": address,
        "description": f"The dead letters of `{flow.topic}`: written by {_and(_dead_letterers(flow))} (whichever could "
        f"not process a message), read by {_and(DLQ_READERS)}.",
        "messages": {DEAD_LETTER: {"$ref": f"#/components/messages/{DEAD_LETTER}"}},
        "bindings": {"kafka": {"partitions": topics.PARTITIONS, "bindingVersion": KAFKA_BINDING}},
    }


def _dead_letter_operations(flow: topology.Flow) -> dict[str, Any]:
    address = topics.dlq(flow.topic)
    ops: dict[str, Any] = {}
    for principal in _dead_letterers(flow):
        summary = f"{principal} dead-letters what it read on `{flow.topic}` and can never process."
        ops[f"{principal}.send.{address}"] = _operation(principal, "send", address, DEAD_LETTER, summary)
    for principal in DLQ_READERS:
        summary = f"{principal} reads `{address}` (the operator console lists dead letters)."
        ops[f"{principal}.receive.{address}"] = _operation(principal, "receive", address, DEAD_LETTER, summary)
    return ops


def _key(key: str) -> dict[str, Any]:
    return {"type": "string", "description": KEY_DESCRIPTIONS.get(key, f"The {key}.")}


def _docstring(model: type[events.Event]) -> tuple[str | None, str | None]:
    """The model's own docstring (not an inherited one): its first paragraph on one line, then the rest."""
    doc = model.__dict__.get("__doc__")
    if not doc:
        return None, None
    first, *rest = (" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))
    return first, "\n\n".join(rest) or None


def _title(name: str) -> str:
    """``DeletionKeysDestroyed`` -> ``Deletion keys destroyed``."""
    return " ".join(re.findall(r"[A-Z][a-z0-9]*", name)).capitalize()


def _and(names: Iterable[str]) -> str:
    items = list(names)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _pointer(name: str) -> str:
    """A name as a JSON pointer token (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


def _version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


if __name__ == "__main__":
    raise SystemExit(main())
