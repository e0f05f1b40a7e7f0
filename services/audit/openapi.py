"""audit's OpenAPI operations, from the models api.py validates with (served at /openapi.json; the console's
HTML pages are not part of the API)."""

from __future__ import annotations

from services.audit.api import log_filters
from services.audit.settings import AuditSettings
from shared.auth import AUDIT_READ
from shared.openapi import Spec


def build_spec(page_cap: int) -> Spec:
    spec = Spec()
    spec.add(
        "get",
        "/audit/logs",
        "Log entries, oldest first, with filters and cursor pagination",
        {"200": "a page of entries and next_cursor"},
        auth=f"scope {AUDIT_READ}",
        query=log_filters(page_cap),
    )
    spec.add(
        "get",
        "/audit/verify",
        "Recompute the chain, check each entry's stored copies against its event, and check every checkpoint",
        {"200": "ok, or the first bad entry: its seq, the reason and, for an edited copy, the field"},
        auth=f"scope {AUDIT_READ}",
    )
    spec.add(
        "get",
        "/audit/receipts/{request_id}",
        "A request's signed receipt",
        {"200": "the receipt and its Ed25519 signature", "404": "no entries for this request"},
        auth=f"scope {AUDIT_READ}",
    )
    spec.add("get", "/audit/public_key", "The public key that checks receipts and checkpoints", {"200": "the key"})
    return spec


SPEC = build_spec(AuditSettings.model_fields["page_size_cap"].default)  # as documented with the default settings
