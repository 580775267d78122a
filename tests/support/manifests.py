"""Offline schema validation of Kubernetes objects; run by the deploy tests as a script.

It runs under the interpreter of the kubernetes-validate venv that
tests/tools/install-deploy-tools.sh makes (kubernetes-validate bundles the Kubernetes JSON
schemas), so it imports only that venv's packages: kubernetes_validate, jsonschema, yaml.

stdin: {"kube_versions": ["1.29.0", ...], "crds": ["<crd.yaml>", ...],
        "documents": [{"source": "...", "doc": {...}}, ...]}
stdout: [{"source", "kind", "name", "validated_by", "errors": [...]}, ...], one per document.

Core kinds are validated strictly (unknown fields are errors) against every requested
Kubernetes version. Kinds defined by a CRD are validated against the CRD's
openAPIV3Schema, made strict the way the API server's pruning would reveal: an object
with `properties` and no `additionalProperties` or `x-kubernetes-preserve-unknown-fields`
rejects unknown fields.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def strict(schema: Any) -> Any:
    """A copy of an openAPIV3Schema in which objects with known properties are closed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crds(paths: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def _metadata_errors(doc: dict[str, Any]) -> list[str]:
    """ObjectMeta checks for custom resources (their CRD schema leaves metadata open)."""
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: required object"]
    errors = []
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        errors.append(f"metadata.name: {name!r} is not a DNS subdomain name")
    for key in ("labels", "annotations"):
        values = meta.get(key, {})
        if not isinstance(values, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            errors.append(f"metadata.{key}: must map strings to strings")
    return errors


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def validate(doc: dict[str, Any], versions: list[str],
             crds: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, list[str]]:
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    if key in crds:
        validator = jsonschema.Draft7Validator(crds[key])
        errors = [f"{_path(e)}: {e.message}" for e in validator.iter_errors(doc)]
        return "crd", errors + _metadata_errors(doc)
    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"k8s {version}: {_path(exc)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"k8s {version}: {exc.message}")
    return "kubernetes", errors


def main() -> int:
    request = json.load(sys.stdin)
    crds = load_crds(request["crds"])
    results = []
    for item in request["documents"]:
        doc = item["doc"]
        validated_by, errors = validate(doc, request["kube_versions"], crds)
        results.append({"source": item["source"], "kind": doc.get("kind"),
                        "name": (doc.get("metadata") or {}).get("name"),
                        "validated_by": validated_by, "errors": errors})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
