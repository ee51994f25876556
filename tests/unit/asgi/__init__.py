"""
Unit tests of L{graceful.asgi}.
"""
