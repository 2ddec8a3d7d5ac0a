"""The ``choreo`` command line: thin commands over the platform library in ``events``.

Only the commands that start or drive the reference services (``demo``) import service
code; the import-linter contracts in pyproject.toml say which.
"""
