"""Tools that start and drive the reference services: ``choreo demo``, ``up``, ``down`` and
``ps``. They live among the services because they start them (the platform library in
``events`` never imports service code)."""
