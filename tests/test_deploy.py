"""
Checks of the files under C{deploy/}: the Prometheus configuration with
C{promtool check config}, the HAProxy configurations with C{haproxy -c},
every multiport configuration with C{twistd multiport --check}, and the
Kubernetes manifest against the Kubernetes schemas (C{kubernetes-validate},
offline).  Each check skips, saying why, when its tool is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import TWISTD

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ONE_MACHINE = DEPLOY / "one-machine"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


class PrometheusTests(SynchronousTestCase):
    """
    C{deploy/prometheus/prometheus.yml}.
    """

    def test_promtool(self) -> None:
        """
        C{promtool check config} finds it valid.
        """
        promtool = shutil.which("promtool")
        if promtool is None:
            raise self.skipTest(
                "promtool is not installed (Debian: apt-get install prometheus)"
            )
        done = run(
            promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("SUCCESS", done.stdout + done.stderr)

    def test_oneTargetPerInstance(self) -> None:
        """
        It scrapes each daemon of the one-machine layout on its own status
        port, so that Prometheus labels each series with its instance.
        """
        text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
        units = (ONE_MACHINE / "multiport@.service").read_text()
        self.assertIn("--status 127.0.0.1:910%i", units)
        for index in (1, 2, 3):
            self.assertIn(f"- 127.0.0.1:910{index}\n", text)


class HAProxyConfigTests(SynchronousTestCase):
    """
    The HAProxy configurations of the one-machine and several-machines
    layouts.
    """

    def setUp(self) -> None:
        if shutil.which("haproxy") is None:
            raise self.skipTest("Debian's haproxy is not installed")

    def test_valid(self) -> None:
        """
        C{haproxy -c} finds both valid.
        """
        for layout in ("one-machine", "several-machines"):
            done = run("haproxy", "-c", "-f", str(DEPLOY / layout / "haproxy.cfg"))
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_matchesTheInstances(self) -> None:
        """
        The one-machine HAProxy sends the PROXY protocol v2 to each
        instance's ports and checks /healthz on its status port.
        """
        config = (ONE_MACHINE / "haproxy.cfg").read_text()
        self.assertIn("option httpchk GET /healthz", config)
        self.assertIn("send-proxy-v2", config)
        for index in (1, 2, 3):
            ports = tomllib.loads((ONE_MACHINE / f"instance{index}.toml").read_text())
            self.assertEqual(ports["defaults"]["proxy_protocol"], "v2")
            for port in ports["port"]:
                self.assertRegex(
                    config,
                    rf"server m{index} 127\.0\.0\.1:{port['port']} port 910{index}\n",
                )


class PeersTests(SynchronousTestCase):
    """
    The shipped files' C{[cluster] peers} name the instances' status ports.
    """

    def test_oneMachine(self) -> None:
        """
        Each daemon on one machine links to the other two, at the status
        ports the systemd unit gives them.
        """
        unit = (ONE_MACHINE / "multiport@.service").read_text()
        self.assertIn("--status 127.0.0.1:910%i", unit)
        for index in (1, 2, 3):
            config = tomllib.loads((ONE_MACHINE / f"instance{index}.toml").read_text())
            self.assertEqual(
                config["cluster"]["peers"],
                [f"http://127.0.0.1:910{n}/" for n in (1, 2, 3) if n != index],
            )

    def test_severalMachines(self) -> None:
        """
        The several-machines file lists every machine HAProxy balances, at
        the status port it checks.
        """
        config = tomllib.loads(
            (DEPLOY / "several-machines" / "multiport.toml").read_text()
        )
        haproxy = (DEPLOY / "several-machines" / "haproxy.cfg").read_text()
        machines = sorted(set(re.findall(r"server \S+ (10\.0\.0\.\d+):", haproxy)))
        self.assertEqual(len(machines), 3)
        self.assertEqual(
            config["cluster"]["peers"], [f"http://{m}:9099/" for m in machines]
        )


class MultiportConfigTests(SynchronousTestCase):
    """
    Every multiport configuration shipped passes C{--check}.
    """

    def check(self, path: Path) -> None:
        token = Path(self.mktemp())
        token.write_text("a-token-for-the-check\n")
        done = run(
            *TWISTD,
            "multiport",
            "--check",
            "--config",
            str(path),
            "--no-status",
            "--admin-token-file",
            str(token),
            "--state-dir",
            self.mktemp(),
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("configuration ok", done.stdout)

    def test_files(self) -> None:
        """
        The instances' files and the several-machines file.
        """
        for index in (1, 2, 3):
            self.check(ONE_MACHINE / f"instance{index}.toml")
        self.check(DEPLOY / "several-machines" / "multiport.toml")


def manifest() -> list[dict[str, Any]]:
    yaml = __import__("yaml")
    text = (DEPLOY / "kubernetes" / "multiport.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


class KubernetesTests(SynchronousTestCase):
    """
    C{deploy/kubernetes/multiport.yaml}.
    """

    def setUp(self) -> None:
        try:
            import kubernetes_validate  # noqa: F401
            import yaml  # noqa: F401
        except ImportError:
            raise self.skipTest(
                "kubernetes-validate is not installed (pip install kubernetes-validate)"
            ) from None

    def validate(self, document: dict[str, Any]) -> None:
        import kubernetes_validate

        kubernetes_validate.validate(
            document, kubernetes_validate.latest_version(), strict=True
        )

    def test_schemas(self) -> None:
        """
        Each resource is valid against the Kubernetes schemas (strict: no
        unknown field).
        """
        documents = manifest()
        self.assertEqual(
            [d["kind"] for d in documents], ["ConfigMap", "Deployment", "Service"]
        )
        for document in documents:
            self.validate(document)

    def test_schemaCatchesMistakes(self) -> None:
        """
        The check is not vacuous: a misspelt field fails it.
        """
        import kubernetes_validate

        deployment = manifest()[1]
        deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
        self.assertRaises(
            kubernetes_validate.ValidationError, self.validate, deployment
        )

    def test_configMapChecks(self) -> None:
        """
        The ConfigMap's multiport.toml passes C{twistd multiport --check}.
        """
        path = Path(self.mktemp())
        path.write_text(manifest()[0]["data"]["multiport.toml"])
        MultiportConfigTests.check(self, path)  # type: ignore[arg-type]

    def test_drainAndProbes(self) -> None:
        """
        Readiness and liveness probe /healthz on the status port; preStop
        drains, then waits; the grace period is above that wait plus the
        drain timeout; Prometheus is told where to scrape.
        """
        config, deployment, _ = manifest()
        drainTimeout = tomllib.loads(config["data"]["multiport.toml"])["defaults"][
            "drain_timeout"
        ]
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertEqual(
                container[probe]["httpGet"], {"path": "/healthz", "port": "status"}
            )
        preStop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        self.assertIn(" drain", preStop)
        wait = int(re.search(r"sleep (\d+)", preStop)[1])  # type: ignore[index]
        self.assertGreater(
            pod["spec"]["terminationGracePeriodSeconds"], wait + drainTimeout
        )
        liveness = container["livenessProbe"]
        self.assertGreater(
            liveness["periodSeconds"] * liveness["failureThreshold"],
            wait + drainTimeout,
        )
        self.assertEqual(
            pod["metadata"]["annotations"],
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9099",
                "prometheus.io/path": "/metrics",
            },
        )


class RollScriptTests(SynchronousTestCase):
    """
    C{deploy/one-machine/roll.sh} hands multiport-ctl the roll of the
    three instances (a stand-in multiport-ctl records its arguments).
    """

    def arguments(self, environment: dict[str, str]) -> list[str]:
        folder = Path(self.mktemp())
        folder.mkdir()
        ctl = folder / "multiport-ctl"
        ctl.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        ctl.chmod(0o755)
        done = subprocess.run(
            ["sh", str(ONE_MACHINE / "roll.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": f"{folder}:/usr/bin:/bin", **environment},
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.splitlines()

    def test_defaultUpgrade(self) -> None:
        """
        By default each instance is upgraded, refusing no connection.
        """
        arguments = self.arguments({})
        self.assertIn("--upgrade", arguments)
        self.assertNotIn("--restart-command", arguments)
        self.assertEqual(
            arguments[-3:], ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
        )

    def test_otherRestart(self) -> None:
        """
        C{RESTART} names a restart command instead, passed on whole.
        """
        arguments = self.arguments({"RESTART": "systemctl restart multiport@{index}"})
        self.assertNotIn("--upgrade", arguments)
        self.assertEqual(
            arguments[arguments.index("--restart-command") + 1],
            "systemctl restart multiport@{index}",
        )
