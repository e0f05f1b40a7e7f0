"""The email channel's verification links: single-purpose signed tokens that name one pending request.

They are JWTs with their own audience, so neither an API token nor a link can pass for the other. A link is
single-use because following it moves its request out of ``verification_pending``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import jwt

AUDIENCE = "lethe-verify"


class InvalidLinkError(ValueError):
    """The token is malformed, forged or expired; the message says which."""


@dataclass(frozen=True)
class LinkClaims:
    request_id: str
    subject_id: str


def issue_link_token(secret: str, *, issuer: str, claims: LinkClaims, now: datetime, ttl: timedelta) -> str:
    payload = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": claims.subject_id,
        "jti": claims.request_id,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def read_link_token(secret: str, token: str, *, issuer: str) -> LinkClaims:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "sub", "jti", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidLinkError("the verification link has expired: ask for a new one") from exc
    except jwt.PyJWTError as exc:
        raise InvalidLinkError(f"not a valid verification token: {exc}") from exc
    return LinkClaims(request_id=str(payload["jti"]), subject_id=str(payload["sub"]))


def verification_mail(*, sender: str, to: str, link: str, token: str, expires_at: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = sender, to
    message["Subject"] = "Confirm the deletion of your data"
    message.set_content(
        "Someone, hopefully you, asked us to delete all personal data of the account with this address.\n\n"
        f"To confirm, open this link before {expires_at:%Y-%m-%d %H:%M} UTC:\n\n  {link}\n\n"
        'or send this token to POST /deletion_requests/verify as {"token": "..."}:\n\n'
        f"  {token}\n\n"
        "If you did not ask for this, ignore this message: nothing will be deleted.\n"
    )
    return message
