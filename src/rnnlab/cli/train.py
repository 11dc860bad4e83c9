"""Commands: see rnnlab/cli/__init__.py."""
