#!/usr/bin/env python3
"""Validates what a double of GitHub's REST API answered against GitHub's
own OpenAPI description (the npm package @octokit/openapi).

    validate.py --spec api.github.com.json transcript.json

The transcript is a JSON list of exchanges: method, path, query, status,
headers (a list of [name, value]) and body. For each one:

- the request's operation must exist in the description, and its path and
  query parameters must validate against the operation's parameters;
- the answer's body must validate against the schema the operation gives
  for its status; statuses GitHub documents for every operation rather
  than each (401, 403, 404, 429: authentication and rate limits) validate
  against `basic-error`, which is what GitHub sends;
- a `Link` header's targets must be the same operation with valid query
  parameters, and the rate-limit headers integers, as the description's
  `components.headers` and GitHub's rate-limit documentation say.

Prints one line of counts; exits 1 with every failure listed.
"""

import argparse
import json
import re
import sys
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import jsonschema

GLOBAL_ERROR_STATUSES = {401, 403, 404, 429}
INTEGER_HEADERS = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-used",
    "x-ratelimit-reset",
    "retry-after",
]
LINK_PART = re.compile(r'^\s*<([^>]+)>\s*;\s*rel="([a-z]+)"\s*$')


def nullable_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` becomes JSON Schema's null type."""
    if isinstance(node, list):
        return [nullable_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: nullable_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


class Spec:
    def __init__(self, path: str) -> None:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        self.paths: Dict[str, Any] = doc["paths"]
        self.components: Dict[str, Any] = doc["components"]
        self.schemas = nullable_to_json_schema(self.components["schemas"])
        self.templates: List[Tuple[re.Pattern[str], str]] = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", p) + "$"), p)
            for p in self.paths
        ]

    def resolve(self, node: Dict[str, Any]) -> Dict[str, Any]:
        while "$ref" in node:
            parts = node["$ref"].lstrip("#/").split("/")
            target: Any = {"components": self.components}
            for part in parts:
                target = target[part]
            node = target
        return node

    def operation(self, method: str, path: str) -> Optional[Tuple[str, Dict[str, Any], Dict[str, str]]]:
        for pattern, template in self.templates:
            m = pattern.match(path)
            if m and method.lower() in self.paths[template]:
                names = re.findall(r"\{([^}]+)\}", template)
                return template, self.paths[template][method.lower()], dict(zip(names, m.groups()))
        return None

    def validate(self, schema: Dict[str, Any], instance: Any) -> List[str]:
        wrapped = dict(nullable_to_json_schema(schema))
        wrapped["components"] = {"schemas": self.schemas}
        validator = jsonschema.Draft4Validator(
            wrapped, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
        )
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(instance)]


def coerce(value: str, schema: Dict[str, Any]) -> Any:
    if schema.get("type") == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def check_parameters(spec: Spec, op: Dict[str, Any], path_params: Dict[str, str], query: str) -> List[str]:
    errors = []
    params = [spec.resolve(p) for p in op.get("parameters", [])]
    declared_query = {p["name"]: p for p in params if p["in"] == "query"}
    for name, value in parse_qsl(query, keep_blank_values=True):
        p = declared_query.get(name)
        if p is None:
            errors.append(f"query parameter {name} is not in the description")
            continue
        errors += [f"query {name}={value}: {e}" for e in spec.validate(p["schema"], coerce(value, p["schema"]))]
    for p in params:
        if p["in"] == "path":
            errors += [f"path {p['name']}: {e}" for e in spec.validate(p["schema"], coerce(path_params[p["name"]], p["schema"]))]
        if p.get("required") and p["in"] == "query" and p["name"] not in dict(parse_qsl(query)):
            errors.append(f"required query parameter {p['name']} is missing")
    return errors


def check(spec: Spec, ex: Dict[str, Any], counts: Dict[str, int]) -> List[str]:
    where = f"{ex['method']} {ex['path']}?{ex['query']} -> {ex['status']}"
    found = spec.operation(ex["method"], ex["path"])
    if found is None:
        return [f"{where}: no such operation in GitHub's description"]
    template, op, path_params = found
    errors = check_parameters(spec, op, path_params, ex["query"])
    status = ex["status"]
    response = op["responses"].get(str(status))
    if response is None:
        if status not in GLOBAL_ERROR_STATUSES:
            errors.append(f"status {status} is not documented for {op['operationId']}")
            schema: Optional[Dict[str, Any]] = None
        else:
            schema = {"$ref": "#/components/schemas/basic-error"}
            counts["errors validated as basic-error"] += 1
    else:
        response = spec.resolve(response)
        schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        errors += spec.validate(schema, ex["body"])
        counts["bodies validated"] += 1
    headers = {k.lower(): v for k, v in ex["headers"]}
    if not headers.get("content-type", "").startswith("application/json"):
        errors.append("content-type is not application/json")
    for name in INTEGER_HEADERS:
        if name in headers:
            if not re.fullmatch(r"\d+", headers[name]):
                errors.append(f"header {name}: {headers[name]!r} is not an integer")
            counts["rate-limit headers checked"] += 1
    if "link" in headers:
        for part in headers["link"].split(","):
            m = LINK_PART.match(part)
            if not m:
                errors.append(f"Link header part {part!r} is not <url>; rel=\"...\"")
                continue
            target = urlsplit(m.group(1))
            linked = spec.operation(ex["method"], target.path)
            if linked is None or linked[0] != template:
                errors.append(f"Link {m.group(2)} points to another operation: {target.path}")
                continue
            errors += [f"Link {m.group(2)}: {e}" for e in check_parameters(spec, linked[1], linked[2], target.query)]
            counts["Link targets checked"] += 1
    counts[op["operationId"]] = counts.get(op["operationId"], 0) + 1
    return [f"{where}: {e}" for e in errors]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("transcript")
    args = parser.parse_args()
    spec = Spec(args.spec)
    with open(args.transcript, encoding="utf-8") as f:
        exchanges = json.load(f)
    counts = {"bodies validated": 0, "errors validated as basic-error": 0, "rate-limit headers checked": 0, "Link targets checked": 0}
    failures: List[str] = []
    for ex in exchanges:
        failures += check(spec, ex, counts)
    print(f"{len(exchanges)} answers checked against GitHub's OpenAPI description: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for failure in failures:
        print("INVALID", failure)
    return 1 if failures or not exchanges else 0


if __name__ == "__main__":
    sys.exit(main())
