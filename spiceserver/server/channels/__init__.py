"""Server-side channel handlers, one module per channel (see :mod:`spiceserver.server.registry`)."""
