"""
The master and its workers: the worker role, starting one, the group that
keeps N of them serving, recycling, and the master's status.
"""
