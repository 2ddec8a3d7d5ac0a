"""The ``choreo`` command line: thin commands over the platform library in ``events``, one
module a command group, each adding itself to the parser ``events.cli.main`` assembles.

No command here imports service code; those that start or drive the reference services
(``demo``, ``up``, ``down``, ``ps``, ``replay``) live in ``services.tools`` and add
themselves to the same parser, as the import-linter contracts in pyproject.toml say.
"""
