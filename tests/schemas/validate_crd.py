"""Validates custom resources against the openAPIV3Schema of their CustomResourceDefinitions.

Usage: validate_crd.py RENDERED.yaml CRD.yaml...
Prints "<Kind>/<name>: valid" for each custom resource in RENDERED.yaml whose kind one of the
CRDs defines; exits 1 on the first invalid one. Kubernetes' structural-schema extensions
(x-kubernetes-*) are ignored, as jsonschema ignores unknown keywords; int-or-string is mapped
to its JSON types.
"""
import sys

import jsonschema
import yaml


def python_pattern(pattern):
    """Go's RE2 allows inline flags after `^`; Python wants them first."""
    if pattern.startswith("^(?i)"):
        return "(?i)^" + pattern[len("^(?i)"):]
    return pattern


def structural(schema):
    if isinstance(schema, dict):
        out = {k: structural(v) for k, v in schema.items()}
        if isinstance(schema.get("pattern"), str):
            out["pattern"] = python_pattern(schema["pattern"])
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [structural(v) for v in schema]
    return schema


def main():
    schemas = {}
    for path in sys.argv[2:]:
        with open(path) as f:
            crd = yaml.safe_load(f)
        kind = crd["spec"]["names"]["kind"]
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            api = f"{group}/{version['name']}"
            schemas[(api, kind)] = structural(version["schema"]["openAPIV3Schema"])
    with open(sys.argv[1]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in schemas:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            jsonschema.validate(doc, schemas[key])
        except jsonschema.ValidationError as e:
            print(f"{name}: invalid: {e.message} at {list(e.absolute_path)}")
            sys.exit(1)
        print(f"{name}: valid")


if __name__ == "__main__":
    main()
