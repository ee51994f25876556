"""
C{graceful ctl}: reads nodes' status over HTTP; loads no Twisted.
"""
