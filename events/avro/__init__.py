"""Everything the platform knows about Avro schemas, in one place.

``names`` resolves a schema's named types (fastavro's parser qualifies every name),
``validate`` compiles the one payload validator whose messages name the field path (used by
the codec and by ``choreo publish``), ``compatibility`` says why one schema cannot read data
written with another (the ``avro`` package's checker plus the project's stricter rules), and
``bounds`` holds the ranges of Avro's integer types.
"""
