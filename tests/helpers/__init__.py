"""Shared test helpers: temp DVC projects, servers on loopback, rehearsals, registry fixtures."""
