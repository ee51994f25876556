"""
Unit tests of L{graceful.handoff}.
"""
