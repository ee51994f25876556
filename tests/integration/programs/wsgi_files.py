"""
A WSGI app that answers the file named by C{GRACEFUL_TEST_FILE} through
C{wsgi.file_wrapper}: C{?length=N} says C{Content-Length: N}; C{?stream}
answers it from a generator instead, read in 64 KiB blocks; C{?sleep=S}
answers C{ok} after S seconds.  Serve it
with C{graceful run tests.integration.programs.wsgi_files:app}.
"""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if "sleep" in query:
        time.sleep(float(query["sleep"][0]))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in query:
        headers.append(("Content-Length", query["length"][0]))
    f = open(os.environ["GRACEFUL_TEST_FILE"], "rb")
    start_response("200 OK", headers)
    if "stream" in query:
        return _blocks(f)
    return environ["wsgi.file_wrapper"](f, 65536)


def _blocks(f):
    with f:
        while block := f.read(65536):
            yield block
