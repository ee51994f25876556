"""
Unit tests of L{graceful.admin}.
"""
