"""lethe audit: the tamper-evident deletion log and receipts."""
