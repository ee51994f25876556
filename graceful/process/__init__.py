"""
The process: the runtime that owns the servers and picks the role.
"""
