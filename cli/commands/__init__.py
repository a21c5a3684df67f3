"""Click commands registered lazily by cli/main.py."""
