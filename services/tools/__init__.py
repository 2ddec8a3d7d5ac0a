"""Tools that start and drive the reference services: ``choreo demo``, ``up``, ``down``,
``ps`` and ``replay`` (the query service's projection rebuild). They live among the
services because they start or import them (the platform library in ``events`` never
imports service code)."""
