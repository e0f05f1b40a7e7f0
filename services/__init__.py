"""lethe's five services; each runs with ``python -m services.<name>``."""
