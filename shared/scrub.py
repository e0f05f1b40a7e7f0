"""Removes e-mail addresses from text bound for logs, dead-letter headers and events."""

from __future__ import annotations

import re

REPLACEMENT = "<address>"

# Broader than RFC 5322 on purpose: a false positive costs a word of a log line, a miss leaks a person's address.
# Unicode letters (SMTPUTF8), quoted local parts, domain literals, and "%40" (an address inside a URL) all count.
_LOCAL = r"""(?:"(?:[^"\\\r\n]|\\.)*"|[\w.!#$%&'*+/=?^`{|}~-]+)"""
_DOMAIN = r"(?:\[[^\]\s]*\]|[\w-]+(?:\.[\w-]+)*)"
_ADDRESS = re.compile(rf"{_LOCAL}(?:@|%40){_DOMAIN}", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` with everything that looks like an e-mail address replaced by ``<address>``."""
    if "@" not in text and "%40" not in text:
        return text  # the common case, without running the expression
    return _ADDRESS.sub(REPLACEMENT, text)
