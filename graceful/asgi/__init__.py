"""
ASGI applications on twisted.web: the resource, its lifespan, the
scope, WebSockets, and the asyncio loop the reactor runs.  Knows no
process and no graceful HTTP site.
"""
