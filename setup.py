from setuptools import find_packages, setup

setup(
    name="graceful",
    version="0.1.0",
    description="Named HTTP/HTTPS servers on Twisted with zero-downtime restarts",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=find_packages(include=["graceful", "graceful.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/graceful_plugin.py"]},
    install_requires=[
        "Twisted[tls]>=24.3",
        "pyOpenSSL>=24.0",
        "service-identity>=24.1",
        "attrs>=23.1",
        # The lifecycles are automat state machines (Twisted depends on it
        # too, but graceful imports it itself).
        "automat>=22.10",
        # The admin /metrics page speaks Prometheus' text format.
        "prometheus-client>=0.20",
    ],
    extras_require={
        # WebSockets: autobahn's WebSocketResource, tracked across a drain;
        # and websockets, whose `python -m websockets URL` is the client the
        # README and examples/websocket.py use to watch a restart reconnect
        # (pure Python, no dependencies of its own).
        "websocket": ["autobahn[twisted]>=23.1", "websockets>=13"],
        # HTTP/2 on the TLS ports: Twisted's h2 channel (h2 and priority);
        # graceful drives h2 and hyperframe itself to drain with GOAWAY.
        "http2": ["Twisted[http2]>=24.3", "h2>=4.1,<5", "priority>=1.1,<2"],
        # Speed for ASGI apps, as uvicorn[standard]: httptools (llhttp, the
        # parser of Node.js) parses requests for graceful's native HTTP/1.1
        # channel, where twisted.web's line parser and Request cost ~25 us of
        # CPU a request; uvloop runs Twisted's asyncio reactor, whose stock
        # loop cost ~20 us a request.  Without them graceful falls back to
        # twisted.web and the stock loop.
        "standard": ["httptools>=0.6", "uvloop>=0.19"],
        # Everything graceful can use.
        "all": [
            "httptools>=0.6",
            "uvloop>=0.19",
            "autobahn[twisted]>=23.1",
            "websockets>=13",
            "Twisted[http2]>=24.3",
            "h2>=4.1,<5",
            "priority>=1.1,<2",
            "asgiref>=3.7",
        ],
        # selenium drives Debian's Chromium for the admin page's browser test;
        # pyyaml reads the Kubernetes examples; klein proves a Klein app
        # mounts; mypy with mypy-zope checks the types; httpx (with h2) and
        # the http2 extra run the HTTP/2 tests.
        "test": [
            "httpx[http2]>=0.27",
            "Twisted[http2]>=24.3",
            "h2>=4.1,<5",
            "priority>=1.1,<2",
            "pytest>=8",
            "selenium>=4.11",
            "pyyaml>=6",
            "klein>=23.5",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            # Real clients of the long-lived connection tests.
            "websockets>=13",
            "autobahn[twisted]>=23.1",
            "asgiref>=3.7",
            # The FastAPI example and a Django project, served across
            # restarts by the ASGI tests.
            "fastapi>=0.100",
            "django>=4.2",
        ],
        # ASGI apps (FastAPI, Starlette, Django): asgiref's ASGI 2 adapter.
        "asgi": ["asgiref>=3.7"],
    },
    entry_points={"console_scripts": ["graceful = graceful._cli:main"]},
)
