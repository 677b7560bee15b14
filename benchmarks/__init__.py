"""Scripts that print figures (one JSON line each), run from the repository root as modules:
`python -m benchmarks.step`, `python -m benchmarks.quality`, ... Never part of the test run; the
`peer_*` scripts run with the peer's Python (lightly on PyTorch) and import nothing from here."""
