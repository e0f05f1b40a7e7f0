"""The links mailed to the person: single-purpose signed tokens that name one request.

They are JWTs with an audience per purpose, so neither an API token nor one kind of link can pass for another:
``lethe-verify`` (the email channel's confirmation: single-use because following it moves its request out of
``verification_pending``) and ``lethe-cancel`` (the acknowledgement mail's cancel link, valid until erasure starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import jwt

AUDIENCE = "lethe-verify"
CANCEL_AUDIENCE = "lethe-cancel"
_WHAT = {AUDIENCE: "verification", CANCEL_AUDIENCE: "cancel"}


class InvalidLinkError(ValueError):
    """The token is malformed, forged or expired; the message says which."""


@dataclass(frozen=True)
class LinkClaims:
    request_id: str
    subject_id: str


def issue_link_token(
    secret: str, *, issuer: str, claims: LinkClaims, now: datetime, ttl: timedelta, audience: str = AUDIENCE
) -> str:
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": claims.subject_id,
        "jti": claims.request_id,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def read_link_token(secret: str, token: str, *, issuer: str, audience: str = AUDIENCE) -> LinkClaims:
    what = _WHAT.get(audience, audience)
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "sub", "jti", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        hint = ": ask for a new one" if audience == AUDIENCE else ""
        raise InvalidLinkError(f"the {what} link has expired{hint}") from exc
    except jwt.PyJWTError as exc:
        raise InvalidLinkError(f"not a valid {what} token: {exc}") from exc
    return LinkClaims(request_id=str(payload["jti"]), subject_id=str(payload["sub"]))


@dataclass(frozen=True)
class CancelLinks:
    """The acknowledgement mail's cancel links: valid until the request's erasure starts."""

    secret: str
    issuer: str
    public_url: str

    def url(self, claims: LinkClaims, *, now: datetime, until: datetime) -> str:
        token = issue_link_token(
            self.secret, issuer=self.issuer, claims=claims, now=now, ttl=until - now, audience=CANCEL_AUDIENCE
        )
        return f"{self.public_url.rstrip('/')}/deletion_requests/{claims.request_id}/cancel?token={token}"

    def read(self, token: str) -> LinkClaims:
        return read_link_token(self.secret, token, issuer=self.issuer, audience=CANCEL_AUDIENCE)


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
