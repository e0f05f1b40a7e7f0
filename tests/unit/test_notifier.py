"""notifier's decisions: stable webhook ids, the retry schedule, signatures, the mail, and the SSRF table."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.adapters.http import AttemptResult, sign
from services.notifier.adapters.ssrf import UnsafeUrlError, check_url, forbidden_reason, literal_ip
from services.notifier.api import new_secret
from services.notifier.handlers import compose_mail, decide_after_attempt, message_id, next_attempt_at, webhook_payload
from shared.events import DatasetOutcome, DeletionKeysDestroyed, KeyRef, RetainedKey

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEDULE = (0, 5, 300, 1800)


def destroyed(result: str = "partial") -> DeletionKeysDestroyed:
    outcomes = [DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")]
    retained = []
    if result == "partial":
        outcomes.append(
            DatasetOutcome(
                dataset="invoices",
                store="mongo",
                outcome="retained",
                rule_id="tax-10y",
                legal_basis="legal obligation (GDPR Art. 17(3)(b))",
                legal_ref="HGB §257",
            )
        )
        retained.append(
            RetainedKey(
                dataset="invoices",
                key_id="dek_" + "1" * 32,
                rule_id="tax-10y",
                legal_basis="legal obligation",
                legal_ref="HGB §257",
            )
        )
    return DeletionKeysDestroyed(
        request_id="req-1",
        subject_id="user-1",
        producer="keyvault",
        outcomes=tuple(outcomes),
        destroyed=(KeyRef(dataset="profiles", key_id="dek_" + "2" * 32),),
        retained=tuple(retained),
        result=result,
    )


def test_the_webhook_id_is_stable_per_event_and_endpoint():
    event = uuid.uuid4()
    assert message_id(event, "ep_a") == message_id(event, "ep_a")
    assert message_id(event, "ep_a") != message_id(event, "ep_b")
    assert message_id(event, "ep_a") != message_id(uuid.uuid4(), "ep_a")


def test_the_schedule_is_followed_with_jitter_and_ends():
    low = next_attempt_at(attempts_made=2, schedule=SCHEDULE, now=NOW, rand=lambda a, b: a)
    high = next_attempt_at(attempts_made=2, schedule=SCHEDULE, now=NOW, rand=lambda a, b: b)
    assert low == NOW + timedelta(seconds=270)
    assert high == NOW + timedelta(seconds=330)
    assert next_attempt_at(attempts_made=4, schedule=SCHEDULE, now=NOW) is None


def test_a_longer_retry_after_is_honoured():
    at = next_attempt_at(attempts_made=1, schedule=SCHEDULE, now=NOW, retry_after_s=120, rand=lambda a, b: 1.0)
    assert at == NOW + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("code", "status", "disable"),
    [
        (200, "delivered", False),
        (204, "delivered", False),
        (301, "pending", False),
        (302, "pending", False),
        (500, "pending", False),
        (429, "pending", False),
        (410, "dead", True),
        (None, "pending", False),
    ],
)
def test_only_2xx_is_success_and_410_disables(code, status, disable):
    result = AttemptResult(code, None if code else "ConnectionError", 3)
    decision = decide_after_attempt(result, attempts_made=1, schedule=SCHEDULE, now=NOW)
    assert (decision.status, decision.disable_endpoint) == (status, disable)


def test_after_the_last_attempt_the_delivery_is_dead():
    decision = decide_after_attempt(AttemptResult(500, "HTTP 500", 3), attempts_made=4, schedule=SCHEDULE, now=NOW)
    assert decision.status == "dead"


def test_signatures_verify_with_the_standard_webhooks_library_and_tampering_fails():
    secret = new_secret()
    body = webhook_payload(destroyed())
    now = datetime.now(UTC)
    headers = sign(message_id="msg_1", timestamp=now, body=body, secrets=[secret])
    assert Webhook(secret).verify(body, headers)["type"] == "data_deletion.partial"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("partial", "complete"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    stale = sign(message_id="msg_1", timestamp=now - timedelta(minutes=6), body=body, secrets=[secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_during_a_rotation_both_secrets_sign():
    old, new = new_secret(), new_secret()
    body = webhook_payload(destroyed("completed"))
    headers = sign(message_id="msg_1", timestamp=datetime.now(UTC), body=body, secrets=[old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers)
    assert Webhook(new).verify(body, headers)


def test_the_payload_carries_outcomes_and_legal_references_but_no_personal_data():
    payload = json.loads(webhook_payload(destroyed()))
    assert payload["type"] == "data_deletion.partial"
    datasets = {d["dataset"]: d for d in payload["data"]["datasets"]}
    assert datasets["invoices"]["legal_ref"] == "HGB §257"
    assert "@" not in json.dumps(payload)


def test_the_mail_lists_what_was_kept_and_why():
    message = compose_mail(destroyed(), to="ada@example.test", sender="lethe <privacy@lethe.local>")
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "profiles" in text
    assert "invoices: legal obligation (GDPR Art. 17(3)(b)) (HGB §257)" in text
    assert message.get_body(preferencelist=("html",)) is not None
    assert "except what the law requires" in message["Subject"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[2002:7f00:1::]/",
        "ftp://example.com/",
        "http://user:pass@example.com/",
        "http:///nohost",
    ],
)
@pytest.mark.asyncio
async def test_unsafe_webhook_urls_are_refused(url):
    with pytest.raises(UnsafeUrlError):
        await check_url(url)


def test_loopback_is_allowed_only_when_the_local_profile_says_so():
    assert forbidden_reason(literal_ip("127.0.0.1"), allow_loopback=True) is None
    assert forbidden_reason(literal_ip("127.0.0.1")) == "a loopback address"
    assert forbidden_reason(literal_ip("10.0.0.1"), allow_loopback=True) == "a private address"
    assert forbidden_reason(literal_ip("93.184.215.14")) is None
