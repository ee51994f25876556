"""
Unit tests of L{graceful.workers}.
"""
