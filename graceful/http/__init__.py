"""
Serving HTTP: the draining site and its channels, HTTP/2, WebSocket and
event-stream tracking, routing, TLS and the named server.  Knows no
process: no pipes, no roles, no restarts.
"""
