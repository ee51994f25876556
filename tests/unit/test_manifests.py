"""
The systemd units and Kubernetes manifests in examples/ parse, and agree with
the example config (examples/graceful.toml): the same ports, the health
path, and stop and grace periods that cover its drain_timeout.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from twisted.trial.unittest import SynchronousTestCase

from graceful._config import load_config

from tests.support import EXAMPLES

SYSTEMD = EXAMPLES / "systemd"
KUBERNETES = EXAMPLES / "kubernetes"
CONFIG = EXAMPLES / "graceful.toml"


def example_config() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text())
    return data


def config_ports() -> set[int]:
    servers = example_config()["servers"].values()
    return {port for server in servers for key in ("ports", "https_ports") for port in server.get(key, [])}


def drain_timeout() -> float:
    return float(example_config()["graceful"]["drain_timeout"])


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """
    A systemd unit file: sections of keys, each with every value it was
    given (C{ListenStream=} and the like repeat), lines continued with a
    trailing backslash joined.

    @raise ValueError: a line that is none of comment, section or C{key=value}.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            raise ValueError(f"{path}:{number}: not a unit file line: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """
    systemd's time spans as used here: C{45}, C{45s}, C{1min 30s}.
    """
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(amount) * units[unit]
    return total


class SystemdUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = read_unit(SYSTEMD / "graceful.service")
        self.socket = read_unit(SYSTEMD / "graceful.socket")

    def one(self, unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
        values = unit[section][key]
        self.assertEqual(len(values), 1, (section, key, values))
        return values[0]

    def test_service(self) -> None:
        """
        Type=notify (graceful speaks sd_notify), a reload that is SIGUSR1, a
        stop that is SIGTERM with a timeout above drain_timeout, and the
        twistd command line on the example config.
        """
        unit = self.service
        self.assertEqual(self.one(unit, "Service", "Type"), "notify")
        self.assertEqual(self.one(unit, "Service", "NotifyAccess"), "main")
        self.assertEqual(self.one(unit, "Service", "ExecReload"), "/bin/kill -USR1 $MAINPID")
        self.assertEqual(self.one(unit, "Service", "KillSignal"), "SIGTERM")
        self.assertGreater(seconds(self.one(unit, "Service", "TimeoutStopSec")), drain_timeout())
        self.assertEqual(self.one(unit, "Service", "NonBlocking"), "yes")
        command = shlex.split(self.one(unit, "Service", "ExecStart"))
        self.assertTrue(command[0].endswith("/twistd"), command)
        self.assertIn("--nodaemon", command)
        self.assertIn("--pidfile=", command)
        self.assertEqual(command[-3:-1], ["graceful", "--config"])
        config = Path(command[-1])
        self.assertEqual(config.parts[-2:], CONFIG.parts[-2:])
        self.assertTrue(
            config.is_relative_to(self.one(unit, "Service", "WorkingDirectory")), config
        )
        self.assertIn("graceful.socket", unit["Unit"]["Requires"])
        self.assertIn("graceful.socket", unit["Unit"]["After"])

    def test_socket(self) -> None:
        """
        The socket unit holds exactly the config's ports, for the service.
        """
        unit = self.socket
        ports = {int(value.rsplit(":", 1)[-1]) for value in unit["Socket"]["ListenStream"]}
        self.assertEqual(ports, config_ports())
        self.assertEqual(self.one(unit, "Socket", "Service"), "graceful.service")
        self.assertEqual(self.one(unit, "Socket", "BindIPv6Only"), "both")
        name = self.one(unit, "Socket", "FileDescriptorName")
        self.assertNotIn(":", name)
        self.assertEqual(unit["Install"]["WantedBy"], ["sockets.target"])

    def test_systemd_analyze_verify(self) -> None:
        """
        systemd itself finds nothing wrong in either unit (with ExecStart
        pointed at programs that exist here).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed")
        directory = Path(tempfile.mkdtemp(prefix="graceful-units-"))
        self.addCleanup(shutil.rmtree, directory, True)
        twistd = Path(sys.executable).parent / "twistd"
        for name in ("graceful.service", "graceful.socket"):
            text = (SYSTEMD / name).read_text()
            text = re.sub(r"/srv/graceful/venv/bin/(\w+)", lambda m: str(twistd.parent / m.group(1)), text)
            text = text.replace("WorkingDirectory=/srv/graceful", f"WorkingDirectory={directory}")
            (directory / name).write_text(text)
        self.assertTrue(twistd.exists())
        result = subprocess.run(
            [analyze, "verify", str(directory / "graceful.service"), str(directory / "graceful.socket")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0 and "Failed to" in result.stderr and "bus" in result.stderr.lower():
            self.skipTest(f"systemd-analyze cannot run here: {result.stderr.strip()}")
        self.assertEqual((result.returncode, result.stderr.strip()), (0, ""))


_SERVICE_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*")


class KubernetesTests(SynchronousTestCase):
    def setUp(self) -> None:
        [self.deployment] = yaml.safe_load_all((KUBERNETES / "deployment.yaml").read_text())
        [self.service] = yaml.safe_load_all((KUBERNETES / "service.yaml").read_text())
        self.pod = self.deployment["spec"]["template"]["spec"]
        [self.container] = self.pod["containers"]
        self.ports = {port["name"]: port["containerPort"] for port in self.container["ports"]}

    def test_kinds_and_selectors(self) -> None:
        self.assertEqual((self.deployment["apiVersion"], self.deployment["kind"]), ("apps/v1", "Deployment"))
        self.assertEqual((self.service["apiVersion"], self.service["kind"]), ("v1", "Service"))
        labels = self.deployment["spec"]["template"]["metadata"]["labels"]
        for selector in (self.deployment["spec"]["selector"]["matchLabels"], self.service["spec"]["selector"]):
            self.assertLessEqual(selector.items(), labels.items())

    def test_ports(self) -> None:
        """
        The container declares every port of the config, with valid names;
        the Service sends only to those.
        """
        self.assertEqual(set(self.ports.values()), config_ports())
        self.assertEqual(len(self.ports), len(self.container["ports"]))
        for name in self.ports:
            self.assertLessEqual(len(name), 15, name)
            self.assertRegex(name, _SERVICE_NAME)
        for port in self.service["spec"]["ports"]:
            self.assertIn(port["targetPort"], self.ports)
            self.assertIsInstance(port["port"], int)

    def test_readiness_on_health(self) -> None:
        """
        The readiness probe asks the health page of the server it is on.
        """
        probe = self.container["readinessProbe"]["httpGet"]
        port = self.ports[probe["port"]]
        [server] = [
            s for s in example_config()["servers"].values()
            if port in s.get("ports", []) and "health" in s
        ]
        self.assertEqual(probe["path"], server["health"])

    def test_termination_covers_the_drain(self) -> None:
        """
        preStop's sleep then drain_timeout fit in the grace period; the
        liveness probe does not kill a pod that drains; a rollout never has
        fewer ready pods than asked for.
        """
        pre_stop = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        sleep = float(pre_stop[1])
        grace = self.pod["terminationGracePeriodSeconds"]
        self.assertGreater(grace, sleep + drain_timeout())
        liveness = self.container["livenessProbe"]
        self.assertGreater(liveness["periodSeconds"] * liveness["failureThreshold"], grace)
        strategy = self.deployment["spec"]["strategy"]
        self.assertEqual(strategy["type"], "RollingUpdate")
        self.assertEqual(strategy["rollingUpdate"]["maxUnavailable"], 0)
        self.assertGreaterEqual(strategy["rollingUpdate"]["maxSurge"], 1)

    def test_command_and_image(self) -> None:
        """
        The container runs the example config in the foreground, as the
        image (Dockerfile) does, from its working directory.
        """
        command = self.container["command"]
        self.assertEqual(command[:2], ["twistd", "--nodaemon"])
        self.assertEqual(command[-3:], ["graceful", "--config", "examples/graceful.toml"])
        dockerfile = (KUBERNETES / "Dockerfile").read_text()
        [cmd] = re.findall(r"^CMD (.*)$", dockerfile, re.M)
        self.assertEqual(json.loads(cmd), command)
        [workdir] = re.findall(r"^WORKDIR (.*)$", dockerfile, re.M)
        self.assertEqual(workdir, self.container["workingDir"])
        [exposed] = re.findall(r"^EXPOSE (.*)$", dockerfile, re.M)
        self.assertEqual({int(p) for p in exposed.split()}, config_ports())
        self.assertEqual(self.pod["securityContext"]["runAsUser"], int(re.findall(r"^USER (\d+)$", dockerfile, re.M)[0]))


class ExampleConfigTests(SynchronousTestCase):
    def test_loads(self) -> None:
        """
        The config every example here follows is itself valid.
        """
        config = load_config(CONFIG)
        self.assertEqual(config.settings.drain_timeout, drain_timeout())
