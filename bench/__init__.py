"""shardcast's load-testing suite: ``python -m bench SCENARIO`` (see docs/performance.md)."""
