"""
Unit tests of L{graceful.lifecycle}.
"""
