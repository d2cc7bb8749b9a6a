"""The sans-I/O SPICE protocol core: bytes in, events and bytes out, time passed in.

Nothing in this package does I/O, reads a clock or touches pixels; display messages carry
already-encoded images.  The asyncio adapter lives in :mod:`spiceserver.server`.
"""
