"""Validates rendered manifests offline: built-in kinds against the Kubernetes
schemas of kubernetes-validate (strict: unknown fields are errors), custom
resources against their CRDs' schemas (crds.mjs, with node). Every resource
must pass one of the two; one with no schema is a failure.

    python3 k8s/schemas/validate.py RENDERED.yaml [KUBERNETES_VERSION]

Prints one line per resource and exits 1 if any failed.
"""

import json
import os
import subprocess
import sys

import kubernetes_validate
import yaml

CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def main() -> int:
    path = sys.argv[1]
    version = sys.argv[2] if len(sys.argv) > 2 else "1.33.0"
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    custom = [d for d in docs if d["apiVersion"].startswith(CRD_GROUPS)]
    here = os.path.dirname(os.path.abspath(__file__))
    crd_results = []
    if custom:
        out = subprocess.run(
            ["node", os.path.join(here, "crds.mjs")],
            input=json.dumps(custom),
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(f"FAIL crds.mjs: {out.stderr.strip()}")
            return 1
        crd_results = json.loads(out.stdout)
    by_id = {id(d): r for d, r in zip(custom, crd_results)}
    failed = 0
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if id(d) in by_id:
            error, schema = by_id[id(d)], f"CRD {d['apiVersion']}"
        else:
            schema = f"kubernetes {version} strict"
            try:
                kubernetes_validate.validate(d, version, strict=True)
                error = None
            except kubernetes_validate.ValidationError as e:
                error = f"{'.'.join(str(p) for p in e.path)}: {e.message}"
            except kubernetes_validate.SchemaNotFoundError as e:
                error = f"no schema: {e.message}"
        if error:
            failed += 1
            print(f"FAIL {name} ({schema}): {error}")
        else:
            print(f"PASS {name} ({schema})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
