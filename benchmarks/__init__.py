"""Speed benchmarks: scripts that print tables (see benchmarks/README.md); never part of the tests."""
