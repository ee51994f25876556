"""
C{python -m graceful ctl ...}: the C{graceful} command without its console
script (from a checkout, or where scripts are not on C{PATH}).
"""

import sys

from ._cli import main

sys.exit(main())
