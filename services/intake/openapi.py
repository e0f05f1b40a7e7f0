"""intake's OpenAPI operations, from the models of schemas.py (served at /openapi.json)."""

from __future__ import annotations

from services.intake.schemas import (
    IDEMPOTENCY_KEY,
    CancelBody,
    ContactPath,
    DeleteBody,
    DeleteQuery,
    DenyBody,
    EmailRequestBody,
    ExtendBody,
    HoldBody,
    HoldPath,
    HoldsQuery,
    InForceHoldsQuery,
    InForceQuery,
    OperatorAnswer,
    ProcessorCallback,
    ProcessorPath,
    RequestPath,
    RequestsQuery,
    RulesPatch,
    SubjectPath,
    VerifyBody,
    VerifyQuery,
)
from shared.auth import CONTACTS_READ, DELETION_ANY, DELETION_SELF, REQUESTS_ADMIN, RETENTION_ADMIN, RETENTION_READ
from shared.openapi import Spec

SPEC = Spec(always={"429": "too many requests; Retry-After says when to try again"})

SPEC.add(
    "delete",
    "/users/{id}/data",
    "Erase a subject's data: starts a deletion request, or returns the subject's open one",
    {
        "200": "the subject's open request (no new one was started)",
        "202": "accepted: request_id, status, status_url, deadline_at, backups_purged_by",
        "409": "a request with the same Idempotency-Key is still in progress",
        "503": "another request for this subject is being stored; retry",
    },
    auth=f"{DELETION_ANY}, or {DELETION_SELF} for the token's own subject",
    path_params=SubjectPath,
    query=DeleteQuery,
    body=DeleteBody,
    headers={"Idempotency-Key": SPEC.schema(IDEMPOTENCY_KEY)},
)
SPEC.add(
    "get",
    "/deletion_requests/{request_id}",
    "A request's status, each stage's time, the per-dataset outcomes and the deadline",
    {"200": "the request", "404": "no such request (or not yours)"},
    auth=f"{DELETION_SELF} (own requests), {DELETION_ANY} or {RETENTION_ADMIN}",
    path_params=RequestPath,
)
SPEC.add(
    "get",
    "/deletion_requests",
    "Deletion requests, newest first, by status, subject and the time they were received (for operators)",
    {"200": "a page of requests; next_offset is null on the last page"},
    auth=DELETION_ANY,
    query=RequestsQuery,
)
SPEC.add(
    "post",
    "/deletion_requests",
    "Email channel: mail a confirmation link if the address belongs to an account (same answer either way)",
    {"202": "accepted"},
    body=EmailRequestBody,
)
SPEC.add(
    "get",
    "/deletion_requests/verify",
    "The page a confirmation link opens: a form that confirms the deletion",
    {"200": "an HTML form"},
    query=VerifyQuery,
)
SPEC.add(
    "post",
    "/deletion_requests/verify",
    "Confirm an email-channel request with the link's token: starts the deletion",
    {
        "200": "the subject already had an open request; this is it",
        "202": "the deletion started",
        "404": "the link's request no longer exists",
        "409": "the link was already used",
        "503": "retry",
    },
    body=VerifyBody,
    form=True,
)
SPEC.add(
    "get",
    "/data_retention/rules",
    "The current retention rules and their version",
    {"200": "the rule set"},
    auth=f"{RETENTION_ADMIN} or {RETENTION_READ}",
)
SPEC.add(
    "patch",
    "/data_retention/rules",
    "Add, replace or remove rules (a new version; published as retention.rules_changed)",
    {
        "200": "the new rule set (ETag: its version)",
        "409": "the rules kept changing; retry",
        "412": "If-Match names an older version",
    },
    auth=RETENTION_ADMIN,
    headers={"If-Match": {"type": "string"}},
    body=RulesPatch,
)
SPEC.add(
    "post",
    "/legal_holds",
    "Place a legal hold (published as legal_hold.placed)",
    {"201": "the hold"},
    auth=RETENTION_ADMIN,
    body=HoldBody,
)
SPEC.add(
    "get",
    "/legal_holds",
    "List legal holds, a page at a time",
    {"200": "holds and next_after"},
    auth=RETENTION_ADMIN,
    query=HoldsQuery,
)
SPEC.add(
    "get",
    "/legal_holds/{hold_id}",
    "One legal hold",
    {"200": "the hold", "404": "no such hold"},
    auth=RETENTION_ADMIN,
    path_params=HoldPath,
)
SPEC.add(
    "delete",
    "/legal_holds/{hold_id}",
    "Release a hold (published as legal_hold.released; the purger then erases what it kept)",
    {"200": "the released hold", "404": "no such hold"},
    auth=RETENTION_ADMIN,
    path_params=HoldPath,
)
SPEC.add(
    "post",
    "/deletion_requests/{request_id}/extend",
    "Extend the request's deadline by its law's extension, with the reason the person is told (published as "
    "deletion.extended); refused when the law allows none, no more, or no longer",
    {
        "202": "extended: the new deadline, the previous one, the law's reference",
        "404": "no such request",
        "409": "the law allows no (further) extension now, or the request is finished",
    },
    auth=REQUESTS_ADMIN,
    path_params=RequestPath,
    body=ExtendBody,
)
SPEC.add(
    "post",
    "/deletion_requests/{request_id}/deny",
    "Refuse the request before anything was erased, on a legal basis (published as deletion.denied): nothing is "
    "erased, and the person is told why, the reference and where to complain. Possible only in the request's "
    "cooling-off period (INTAKE_COOLING_OFF_S); repeating it answers the same",
    {
        "202": "denied: the basis, the reference, the law's provision on refusing and where to complain",
        "404": "no such request",
        "409": "too late: erasure has started (the detail says when), or the request was cancelled or has ended",
    },
    auth=REQUESTS_ADMIN,
    path_params=RequestPath,
    body=DenyBody,
)
SPEC.add(
    "get",
    "/deletion_requests/{request_id}/cancel",
    "The acknowledgement mail's cancel link: an HTML form that posts the token (opening the link cancels nothing)",
    {"200": "the form", "400": "query.token missing or malformed, or the link expired (erasure started) or is forged"},
    path_params=RequestPath,
    query=VerifyQuery,
)
SPEC.add(
    "post",
    "/deletion_requests/{request_id}/cancel",
    "Cancel the request at the person's wish while nothing has been erased (published as deletion.cancelled): with "
    "the cancel link's token in the body (JSON or the link's form), or a bearer token. Possible only in the "
    "request's cooling-off period; repeating it answers the same",
    {
        "202": "cancelled (a form post gets an HTML page)",
        "400": "body.token is forged, expired or for another request",
        "404": "no such request (or not yours)",
        "409": "too late: erasure has started (the detail says when), or the request was denied or has ended",
    },
    auth=f"the link's token, or {DELETION_SELF} (own request), {REQUESTS_ADMIN} or {DELETION_ANY}",
    path_params=RequestPath,
    body=CancelBody,
)
SPEC.add(
    "post",
    "/processor_confirmations",
    "A processor's answer to the erasure request lethe sent it: erased, or refused with its reason. Signed with "
    "Standard Webhooks headers under the processor's own secret (the one its erasure requests are signed with); "
    "recorded as deletion.processor_confirmed",
    {
        "202": "recorded; the purger makes it the dataset's outcome",
        "401": "the signature does not verify with the processor's secret",
        "404": "no such request",
        "409": "the request does not wait for this dataset's confirmation",
    },
    headers={name: {"type": "string"} for name in ("webhook-id", "webhook-timestamp", "webhook-signature")},
    body=ProcessorCallback,
)
SPEC.add(
    "post",
    "/deletion_requests/{request_id}/processors/{dataset}/confirmation",
    "An operator's answer for a processor (it confirmed by other means), with a note: the same as its own answer",
    {
        "202": "recorded",
        "404": "no such request, or not a processor dataset",
        "409": "the request does not wait for this dataset's confirmation",
    },
    auth=REQUESTS_ADMIN,
    path_params=ProcessorPath,
    body=OperatorAnswer,
)
SPEC.add(
    "get",
    "/internal/rules",
    "The current retention rules and their version, for the purger and keyvault (no per-client rate limit)",
    {"200": "the rule set"},
    auth=f"{RETENTION_READ} or {RETENTION_ADMIN}",
)
SPEC.add(
    "get",
    "/internal/holds",
    "The unreleased legal holds: a subject's (its own and everyone's), those ending in a window, or all (for the "
    "purger and keyvault, each time they are about to destroy something)",
    {"200": "holds"},
    auth=f"{RETENTION_READ} or {RETENTION_ADMIN}",
    query=InForceHoldsQuery,
)
SPEC.add(
    "get",
    "/internal/retention",
    "The rule set (with its version) and a subject's unreleased holds in one answer: what the purger and keyvault "
    "read before each destructive step of one deletion",
    {"200": "version, rules, changed_at, changed_by, holds"},
    auth=f"{RETENTION_READ} or {RETENTION_ADMIN}",
    query=InForceQuery,
)
SPEC.add(
    "get",
    "/internal/contacts/{request_id}",
    "A request's sealed contact address, for notifier's final notice (ciphertext only keyvault opens)",
    {
        "200": "request_id, subject_id, email_ciphertext, copies (an authorised agent's, sealed the same way)",
        "404": "the request has no contact address",
    },
    auth=CONTACTS_READ,
    path_params=ContactPath,
)
