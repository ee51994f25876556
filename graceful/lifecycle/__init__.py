"""
How a process lives: the core every role shares, the role interface, the
hand-over machine (serving alone, or a master), leaving, the executables a
restart may run, and the admin socket handed across restarts.
"""
