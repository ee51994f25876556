"""
examples/kubernetes validated against Kubernetes' own schemas (strict: an
unknown or misspelt field fails), with kubernetes-validate, which ships the
schemas, so no cluster and no network are needed.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"


class KubernetesSchemaTests(SynchronousTestCase):
    def test_examples_are_valid(self) -> None:
        try:
            import kubernetes_validate
        except ImportError:
            raise SkipTest("kubernetes-validate is not installed (the test extra has it)")
        files = sorted(EXAMPLES.glob("*.yaml"))
        self.assertTrue(files)
        for path in files:
            for resource in yaml.safe_load_all(path.read_text()):
                kubernetes_validate.validate(
                    resource, kubernetes_validate.latest_version(), strict=True
                )

    def test_a_misspelt_field_is_caught(self) -> None:
        """
        The check fails on a mistake (it must not pass on nothing).
        """
        try:
            import kubernetes_validate
        except ImportError:
            raise SkipTest("kubernetes-validate is not installed (the test extra has it)")
        resource = next(yaml.safe_load_all((EXAMPLES / "deployment.yaml").read_text()))
        resource["spec"]["replicaz"] = 2
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)
