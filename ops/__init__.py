"""Tooling that works on the project rather than in it: generators of published documents (shared never imports it)."""
