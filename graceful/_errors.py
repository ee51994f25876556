"""
The errors graceful reports to people, each a single line.
"""


class ConfigError(Exception):
    """
    Bad input: a config key, a file, a port, an app.  The message is one line
    that names what is wrong; the process that meets it exits with status 1.
    """


class RestartRefused(Exception):
    """
    A restart was asked for while another one runs, or while shutting down.
    """


class ExecutableNotAllowed(Exception):
    """
    A restart named an executable that C{allowed_executables} does not list.
    """


class WorkerCountRefused(Exception):
    """
    A change of the worker count that cannot be made: C{code} is the admin
    API's answer (400: a bad count; 404: no workers here; 409: a restart
    runs, or the group leaves).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
