"""A client of intake's reads for the other services: the retention rules and legal holds in force (the purger
and keyvault, each time they are about to destroy something) and a request's sealed contact (notifier).

intake owns those stores; the others reach them here, at the moment they act, so "retention is state" holds
across services: a hold placed a second ago is seen by the next erase. A projection built from ``legal_hold.*``
events could lag behind a ``deletion.requested`` on another topic and erase what the hold keeps.

intake being away, or refusing the token, is raised as :class:`ConnectionError`: the consumer loop waits for it
(nothing is dead-lettered for it), and ``/readyz`` reports it through :meth:`IntakeClient.ping`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from shared.contacts import Contact
from shared.retention import Hold, InForce, Rule, RuleSet


class IntakeClient:
    def __init__(self, base_url: str, *, token: str, timeout_s: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, path: str, **params: str) -> dict[str, Any] | None:
        """The JSON answer; None for a 404. Anything but 200 or 404 is a :class:`ConnectionError`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.get(self._base + path, params=params, headers=headers) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    detail = (await response.text())[:300]
                    raise ConnectionError(f"intake answered {response.status} to GET {path}: {detail}")
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionError(f"intake at {self._base} does not answer: {exc!r}") from exc

    async def ping(self) -> bool:
        """intake answers (for ``/readyz``)."""
        try:
            return await self._get("/healthz") is not None
        except ConnectionError:
            return False

    async def _required(self, path: str, **params: str) -> dict[str, Any]:
        body = await self._get(path, **params)
        if body is None:
            raise ConnectionError(f"intake has no {path}")
        return body

    async def rule_set(self) -> RuleSet:
        return _rule_set(await self._required("/internal/rules"))

    async def in_force(self, subject_id: str) -> InForce:
        """The rule set and this subject's unreleased holds, in one round trip (before each destructive step)."""
        body = await self._required("/internal/retention", subject_id=subject_id)
        return InForce(_rule_set(body), tuple(_holds(body)))

    async def _holds(self, **params: str) -> list[Hold]:
        return _holds(await self._required("/internal/holds", **params))

    async def holds_for(self, subject_id: str) -> list[Hold]:
        """The unreleased holds that cover this subject (its own, and those of everyone)."""
        return await self._holds(subject_id=subject_id)

    async def active_holds(self) -> list[Hold]:
        """Every unreleased hold."""
        return await self._holds()

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]:
        """The unreleased holds whose end falls in (``after``, ``until``]."""
        window = {"ending_until": until.isoformat()} | ({"ending_after": after.isoformat()} if after else {})
        return await self._holds(**window)

    async def contact(self, request_id: str) -> Contact | None:
        """The request's sealed address, as intake captured it; None if it has none."""
        body = await self._get(f"/internal/contacts/{quote(request_id, safe='')}")
        if body is None:
            return None
        return Contact(body["request_id"], body["subject_id"], body["email_ciphertext"], tuple(body.get("copies", ())))


def _rule_set(body: dict[str, Any]) -> RuleSet:
    changed_at = body.get("changed_at")
    return RuleSet(
        version=body["version"],
        rules=tuple(Rule.model_validate(r) for r in body["rules"]),
        changed_at=datetime.fromisoformat(changed_at) if changed_at else None,
        changed_by=body.get("changed_by"),
    )


def _holds(body: dict[str, Any]) -> list[Hold]:
    """The holds of an answer, without the view-only fields intake adds (``active``)."""
    fields = set(Hold.model_fields)
    return [Hold.model_validate({k: v for k, v in h.items() if k in fields}) for h in body.get("holds", [])]


def intake_client(url: str, token: SecretStr | None) -> IntakeClient:
    """The client of a service configured with an intake token (required: the service cannot decide without it)."""
    if token is None or not token.get_secret_value():
        raise ValueError("set the service's INTAKE_TOKEN: it reads the rules, holds and contacts from intake")
    return IntakeClient(url, token=token.get_secret_value())
