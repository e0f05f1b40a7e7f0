"""Small helpers the test layers share: free ports and the outcomes of a typical partial deletion."""

import socket

from shared.events import DatasetOutcome

ERASED_PROFILES = DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")
KEPT_INVOICES = DatasetOutcome(
    dataset="invoices",
    store="mongo",
    outcome="retained",
    rule_id="tax-10y",
    legal_basis="legal obligation",
    legal_ref="HGB §257",
)
PARTIAL = (ERASED_PROFILES, KEPT_INVOICES)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
