"""
Unit tests of L{graceful.process}.
"""
