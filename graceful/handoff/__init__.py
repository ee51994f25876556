"""
What passes between a process and the one it starts: the messages, the
pipes, the OS effects (signals, spawning, exit) and supervision (pidfile,
sd_notify, parent death).  Knows no HTTP.
"""
