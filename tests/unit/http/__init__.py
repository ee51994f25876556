"""
Unit tests of L{graceful.http}.
"""
