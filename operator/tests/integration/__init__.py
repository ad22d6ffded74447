"""Integration tests: kopf in-process against the kmock emulator, the real API on real stores."""
