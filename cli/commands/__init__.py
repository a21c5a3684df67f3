"""Click commands registered lazily by search/cli.py."""
