"""
An app whose import kills its process, as a crashing new release would.
"""

import os
import signal

os.kill(os.getpid(), signal.SIGSEGV)
