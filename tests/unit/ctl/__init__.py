"""
Unit tests of L{graceful.ctl}.
"""
