#!/usr/bin/env python3
"""Lints and renders a Helm chart with the real Helm engine (PyPI's helm-python-sdk, Helm's
own Go SDK) and prints the result as JSON for the Rust tests (tests/it/chart.rs):

    hack/helm-render.py CHART_DIR VALUES_JSON [NAMESPACE]

Output: {"chart": {...}, "lint": {...}, "manifests": {template: yaml}} on success, or
{"error": "..."} when the values are rejected (schema) or a template fails."""
import json
import sys

try:
    import helm_python as helm
except ImportError:
    print(json.dumps({"error": "helm-python-sdk is not installed: pip install helm-python-sdk"}))
    sys.exit(3)


def main() -> int:
    chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
    namespace = sys.argv[3] if len(sys.argv) > 3 else "stevedore-system"
    try:
        with helm.Chart.load(chart_dir) as chart:
            chart.validate_schema(values)
            manifests = chart.render(values, name="stevedore", namespace=namespace, is_install=True)
            metadata = chart.metadata
            crds = chart.crds
        report = helm.lint(chart_dir, values, strict=True, namespace=namespace)
    except helm.HelmError as error:
        print(json.dumps({"error": str(error)}))
        return 0
    print(json.dumps({"chart": metadata, "lint": report, "manifests": manifests, "crds": crds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
