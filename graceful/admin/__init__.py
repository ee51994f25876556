"""
The admin pages built on the process: the API, the page, tokens,
refusals, metrics, health, and how they are mounted on a server.
"""
