"""
An app whose import never ends, as a new release stuck at start would.
"""

import time

time.sleep(120)
