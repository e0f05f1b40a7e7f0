"""Bearer JWTs with scopes (PyJWT): verifying them at the HTTP edge, and issuing them for local use."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web

from shared.events import utcnow
from shared.problems import ProblemError
from shared.settings import AuthSettings, CliSettings

# The scopes lethe knows (docs/operations.md, "Auth", lists who holds which).
DELETION_SELF = "deletion:self"
DELETION_ANY = "deletion:any"
RETENTION_ADMIN = "retention:admin"
REQUESTS_ADMIN = "requests:admin"  # acting on a request for someone else (a processor's answer, by hand)
RETENTION_READ = "retention:read"  # the rules and holds in force (the purger and keyvault, from intake)
CONTACTS_READ = "contacts:read"  # a request's sealed address (notifier, from intake)
AUDIT_READ = "audit:read"
WEBHOOKS_ADMIN = "webhooks:admin"
KEYS_USE = "keys:use"  # services fetching data keys to encrypt and decrypt fields
# Shredding a subject's `contact` key at once, and no other (notifier, once the final notice is sent).
KEYS_DESTROY_CONTACT = "keys:destroy:contact"
KEYS_ADMIN = "keys:admin"  # restoring, rotating and shredding any key by hand (never one a rule or hold keeps)
SCOPES = frozenset(
    {
        DELETION_SELF,
        DELETION_ANY,
        RETENTION_ADMIN,
        REQUESTS_ADMIN,
        RETENTION_READ,
        CONTACTS_READ,
        AUDIT_READ,
        WEBHOOKS_ADMIN,
        KEYS_USE,
        KEYS_DESTROY_CONTACT,
        KEYS_ADMIN,
    }
)


@dataclass(frozen=True)
class Principal:
    """Who called, and what they may do."""

    subject: str
    scopes: frozenset[str]
    expires_at: datetime | None = None


class Unauthenticated(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, "Unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="lethe"'})


class Forbidden(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, "Forbidden", detail)


class TokenVerifier:
    """Checks signature, expiry, issuer and audience; the token's ``scope`` claim lists its scopes."""

    def __init__(self, settings: AuthSettings) -> None:
        if settings.jwks_url:
            self._jwks: jwt.PyJWKClient | None = jwt.PyJWKClient(settings.jwks_url, cache_keys=True)
            self._algorithms = ["RS256", "ES256", "EdDSA"]
        elif settings.jwt_secret is not None:
            self._jwks = None
            self._algorithms = ["HS256"]
        else:
            raise ValueError("set LETHE_AUTH_JWT_SECRET (local) or LETHE_AUTH_JWKS_URL (production)")
        self._settings = settings

    def verify(self, token: str) -> Principal:
        try:
            key: Any
            if self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            else:
                assert self._settings.jwt_secret is not None
                key = self._settings.jwt_secret.get_secret_value()
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise Unauthenticated("invalid token: the scope claim must be a space-separated string")
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        return Principal(subject=str(claims["sub"]), scopes=frozenset(scope.split()), expires_at=expires)

    def principal(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token in the Authorization header")
        return self.verify(token.strip())

    def require(self, request: web.Request, *any_of: str) -> Principal:
        """The caller, if their token is valid and carries one of ``any_of``; otherwise 401 or 403."""
        principal = self.principal(request)
        if not principal.scopes & set(any_of):
            raise Forbidden(f"this needs one of the scopes: {', '.join(sorted(any_of))}")
        return principal


def issue_token(settings: AuthSettings, *, subject: str, scopes: Iterable[str], ttl: timedelta) -> str:
    """A token the local stack accepts (HS256); for demos, tests and service-to-service calls."""
    if settings.jwt_secret is None:
        raise ValueError("LETHE_AUTH_JWT_SECRET is not set, so no token can be issued locally")
    now = utcnow()
    claims = {
        "sub": subject,
        "scope": " ".join(sorted(set(scopes))),
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def operator_token(cli: CliSettings, *scopes: str, ttl: timedelta = timedelta(minutes=5)) -> str | None:
    """The token an operator command sends: LETHE_ADMIN_TOKEN, or one signed with the local secret (None if neither)."""
    if cli.admin_token is not None:
        return cli.admin_token.get_secret_value()
    auth = AuthSettings()
    if auth.jwt_secret is None:
        return None
    return issue_token(auth, subject="lethe-cli", scopes=scopes, ttl=ttl)
