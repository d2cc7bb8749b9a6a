"""Transport adapters: stream sockets (TCP, TLS, Unix), with WebSocket and HTTP sniffed on
the same port."""
