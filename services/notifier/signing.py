"""Standard Webhooks secrets and signatures: policy-free crypto, shared by the handlers and the admin API."""

from __future__ import annotations

import base64
import os
from datetime import datetime

from standardwebhooks.webhooks import Webhook


def new_secret() -> str:
    """A fresh ``whsec_`` signing secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(*, message_id: str, timestamp: datetime, body: str, secrets: list[str]) -> dict[str, str]:
    """The three Standard Webhooks headers; one ``v1,`` signature per live secret (several during a rotation)."""
    signatures = " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }
