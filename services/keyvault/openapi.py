"""keyvault's OpenAPI operations, from the models api.py validates with (served at /openapi.json)."""

from __future__ import annotations

from services.keyvault.api import DestroyBody, KeyPath, SubjectPath
from shared.auth import KEYS_ADMIN, KEYS_DESTROY_CONTACT, KEYS_USE
from shared.openapi import Spec

KEY_RESPONSE = "the data key: key_id, dek (base64, 32 bytes), cache_ttl_s"
SPEC = Spec()

SPEC.add(
    "post",
    "/v1/keys/{subject_id}/{dataset}",
    "Get the subject's active data key for the dataset, creating it on first use",
    {"200": KEY_RESPONSE, "410": "the key is disabled pending destruction"},
    auth=f"scope {KEYS_USE}",
    path_params=KeyPath,
)
SPEC.add(
    "get",
    "/v1/keys/{subject_id}/{dataset}/{key_id}",
    "Get the data key that opens a ciphertext",
    {"200": KEY_RESPONSE, "404": "no such key", "410": "the key is disabled or destroyed"},
    auth=f"scope {KEYS_USE}",
    path_params=KeyPath,
)
SPEC.add(
    "post",
    "/v1/keys/{subject_id}/{dataset}/restore",
    "Restore a disabled key inside its grace window",
    {"200": "the key's status", "404": "no such key", "409": "not restorable"},
    auth=f"scope {KEYS_ADMIN}",
    path_params=KeyPath,
)
SPEC.add(
    "post",
    "/v1/keys/{subject_id}/{dataset}/destroy",
    "Shred one key at once, beyond restore (body: request_id); emits deletion.keys_shredded. "
    f"{KEYS_DESTROY_CONTACT} may shred only contact keys; no scope may shred a key of a dataset that "
    "a rule or hold keeps now (409 names it)",
    {
        "200": "the key's status",
        "404": "no such key",
        "409": "a rule or hold in force keeps the key's dataset; the body names it",
    },
    auth=f"scope {KEYS_DESTROY_CONTACT} (contact keys) or {KEYS_ADMIN}",
    path_params=KeyPath,
    body=DestroyBody,
)
SPEC.add(
    "get",
    "/v1/subjects/{subject_id}/keys",
    "Status of every key of a subject (no key material)",
    {"200": "the subject's keys and their states"},
    auth=f"scope {KEYS_USE} or {KEYS_ADMIN}",
    path_params=SubjectPath,
)
SPEC.add(
    "post",
    "/v1/admin/kek/rotate",
    "Re-wrap every data key under the current KEK",
    {"200": "how many keys were re-wrapped"},
    auth=f"scope {KEYS_ADMIN}",
)
