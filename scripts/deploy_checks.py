#!/usr/bin/env python3
"""Checks of deploy/ that need a parser rather than a tool of their own (scripts/check-deploy.sh
runs them in `make test`, with the venv that scripts/install-deps.sh makes):

  dockerfile FILE       the rules deploy/Dockerfile keeps (dockerfile-parse)
  kubernetes FILE...    Tally's rules for its manifests, beyond the schemas (kubernetes-validate
                        checks those)
  dashboard FILE        the Grafana dashboard's structure
  metrics [--sources DIR] [--output FILE]
                        every PromQL expression of the dashboard and the alert rules with the
                        metric names it uses, as JSON on stdout (or FILE); with --sources, fails unless
                        every name is registered somewhere in the Swift sources under DIR.
                        Tests/EndToEndTests/MonitoringTests.swift reads the same JSON and asks a
                        real Prometheus for each name.

Each command prints one line per problem and exits 1 when there is any.
"""

import argparse
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "deploy", "monitoring", "tally-dashboard.json")
ALERTS = os.path.join(ROOT, "deploy", "monitoring", "tally-alerts.yaml")


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, message):
        self.lines.append(f"{where}: {message}")

    def finish(self, what):
        for line in self.lines:
            print(line, file=sys.stderr)
        if self.lines:
            print(f"{what}: {len(self.lines)} problem(s)", file=sys.stderr)
            return 1
        return 0


# --- PromQL ---------------------------------------------------------------------------------

# Words that are PromQL syntax, not metric names, when they are not followed by "(".
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
# Words followed by a list of label names in parentheses.
LABEL_LIST_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators, which may take their `by (...)` before their parentheses.
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio",
}
# Grafana's built-in interval variables, replaced by a fixed range for Prometheus.
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


class PromQLError(Exception):
    pass


def grafana_to_promql(expr):
    """The expression with Grafana's interval variables replaced; any other variable is an error
    (the dashboard defines none that PromQL could see)."""
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    leftover = re.search(r"\$\{?[A-Za-z_]\w*", expr)
    if leftover:
        raise PromQLError(f"unknown dashboard variable {leftover.group(0)}")
    return expr


def _tokens(expr):
    """PromQL tokens: ("ident", name), ("matchers", text), ("punct", char); strings, numbers,
    durations, ranges and comments are dropped."""
    tokens = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and expr[i] != "\n":
                i += 1
        elif c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            if j >= n:
                raise PromQLError("unterminated string")
            i = j + 1
        elif c == "{":
            j, depth = i + 1, 1
            while j < n and depth:
                if expr[j] in "\"'`":
                    quote = expr[j]
                    j += 1
                    while j < n and expr[j] != quote:
                        j += 2 if expr[j] == "\\" and quote != "`" else 1
                elif expr[j] == "{":
                    depth += 1
                elif expr[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise PromQLError("unbalanced {")
            tokens.append(("matchers", expr[i + 1 : j - 1]))
            i = j
        elif c == "[":
            j = expr.find("]", i)
            if j < 0:
                raise PromQLError("unbalanced [")
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "._"):
                j += 1
            i = j
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            tokens.append(("ident", expr[i:j]))
            i = j
        else:
            tokens.append(("punct", c))
            i += 1
    return tokens


def metric_names(expr):
    """The metric names a PromQL expression selects: bare names and __name__ matchers."""
    names = set()
    tokens = _tokens(expr)
    k = 0
    while k < len(tokens):
        kind, text = tokens[k]
        following = tokens[k + 1] if k + 1 < len(tokens) else None
        if kind == "matchers":
            for match in re.finditer(r"__name__\s*=\s*\"([^\"]+)\"", text):
                names.add(match.group(1))
        elif kind == "ident":
            if text.lower() in LABEL_LIST_WORDS:
                if following == ("punct", "("):
                    close = k + 1
                    while close < len(tokens) and tokens[close] != ("punct", ")"):
                        close += 1
                    k = close
            elif following == ("punct", "("):
                pass  # a function or an aggregation
            elif text.lower() in AGGREGATIONS and following in (("ident", "by"), ("ident", "without")):
                pass  # an aggregation with its grouping first
            elif text.lower() not in PROMQL_KEYWORDS:
                names.add(text)
        k += 1
    return names


def monitoring_expressions(problems):
    """Every expression of the dashboard and the alert rules: (where, expression as written,
    expression for Prometheus)."""
    found = []
    with open(DASHBOARD, encoding="utf-8") as handle:
        dashboard = json.load(handle)
    for panel in all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            where = f"{rel(DASHBOARD)}: panel '{panel.get('title')}' {target.get('refId')}"
            try:
                found.append((where, expr, grafana_to_promql(expr)))
            except PromQLError as error:
                problems.add(where, str(error))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            inner = re.match(r"^\s*(?:label_values|query_result)\((.*)\)\s*$", text, re.S)
            expr = inner.group(1) if inner else text
            found.append((f"{rel(DASHBOARD)}: variable '{variable.get('name')}'", text, expr))
    with open(ALERTS, encoding="utf-8") as handle:
        rules = yaml.safe_load(handle)
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            where = f"{rel(ALERTS)}: {group.get('name')}/{rule.get('alert') or rule.get('record')}"
            found.append((where, rule.get("expr", ""), str(rule.get("expr", ""))))
    return found


def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def rel(path):
    return os.path.relpath(path, ROOT)


def command_metrics(arguments):
    problems = Problems()
    expressions = []
    every = set()
    for where, written, promql in monitoring_expressions(problems):
        try:
            names = sorted(metric_names(promql))
        except PromQLError as error:
            problems.add(where, f"{error}: {written}")
            continue
        if not names:
            problems.add(where, f"selects no metric: {written}")
        every.update(names)
        expressions.append({"where": where, "expr": written, "promql": promql, "metrics": names})
    if arguments.sources:
        registered = registered_literals(arguments.sources)
        for name in sorted(every):
            candidates = [name] + [name[: -len(s)] for s in ("_bucket", "_sum", "_count") if name.endswith(s)]
            if not any(candidate in registered for candidate in candidates):
                problems.add(name, f"no Swift source under {arguments.sources} registers this metric")
    if not arguments.sources:
        answer = json.dumps({"expressions": expressions, "metrics": sorted(every)}, indent=1)
        if arguments.output:
            with open(arguments.output, "w", encoding="utf-8") as handle:
                handle.write(answer + "\n")
        else:
            print(answer)
    return problems.finish("monitoring metrics")


def registered_literals(directory):
    literals = set()
    for folder, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".swift"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    literals.update(re.findall(r"\"(tally_[a-z0-9_]+)\"", handle.read()))
    return literals


# --- Grafana dashboard ----------------------------------------------------------------------


def command_dashboard(arguments):
    problems = Problems()
    where = rel(arguments.file)
    with open(arguments.file, encoding="utf-8") as handle:
        dashboard = json.load(handle)
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.add(where, f"no '{key}'")
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    ids = set()
    cells = {}
    for panel in all_panels(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            problems.add(where, f"panel '{title}': id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.add(where, f"panel '{title}' is wider than the grid")
        for dx in range(grid.get("w", 0)):
            for dy in range(grid.get("h", 0)):
                cell = (grid.get("x", 0) + dx, grid.get("y", 0) + dy)
                if cell in cells:
                    problems.add(where, f"panel '{title}' overlaps '{cells[cell]}'")
                    break
                cells[cell] = title
        if panel.get("type") == "row":
            continue
        if not panel.get("description"):
            problems.add(where, f"panel '{title}' says nothing about what it shows (description)")
        datasource = panel.get("datasource", {})
        if datasource.get("uid") != "${datasource}" or "datasource" not in variables:
            problems.add(where, f"panel '{title}' does not use the dashboard's datasource variable")
        targets = panel.get("targets", [])
        if not targets:
            problems.add(where, f"panel '{title}' has no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.add(where, f"panel '{title}' repeats a refId")
        for target in targets:
            if not target.get("expr", "").strip():
                problems.add(where, f"panel '{title}' {target.get('refId')}: empty expression")
    return problems.finish("dashboard")


# --- Dockerfile -----------------------------------------------------------------------------

# The shared libraries the release binaries link beyond glibc and libgcc (`ldd` of what
# `make build-release` makes: the Swift runtime, libstdc++ and BoringSSL are linked in).
RUNTIME_LIBRARIES = ["libzstd1", "libsqlite3-0", "libyaml-0-2"]
PORTS = {"7400", "7480", "7380"}
BINARIES = ["tally-agent", "tally-collector", "tallyctl"]


def command_dockerfile(arguments):
    from dockerfile_parse import DockerfileParser

    problems = Problems()
    where = rel(arguments.file)
    with open(arguments.file, "rb") as handle:
        parser = DockerfileParser(fileobj=handle, env_replace=False)
        instructions = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    stages = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            stages.append({"from": instruction, "body": []})
        elif stages:
            stages[-1]["body"].append(instruction)
        elif instruction["instruction"] != "ARG":
            problems.add(where, f"line {instruction['startline'] + 1}: {instruction['instruction']} before the first FROM")
    if len(stages) < 2:
        problems.add(where, "not multi-stage: a build stage and a runtime stage are expected")
        return problems.finish("Dockerfile")

    names = set()
    for stage in stages:
        words = stage["from"]["value"].split()
        image = next((w for w in words if not w.startswith("--")), "")
        line = stage["from"]["startline"] + 1
        if image not in names:
            last = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
                problems.add(where, f"line {line}: base image '{image}' is not pinned to a tag")
        lowered = [w.lower() for w in words]
        if "as" in lowered and lowered.index("as") + 1 < len(words):
            names.add(words[lowered.index("as") + 1])
        stage["image"] = image

    build, runtime = stages[0], stages[-1]
    if build["image"].split(":")[0] != "swift":
        problems.add(where, f"the build stage starts from '{build['image']}', not the official swift image")
    if not (build["image"].endswith("-bookworm") and runtime["image"].startswith("debian:") and "bookworm" in runtime["image"]):
        problems.add(where, "build and runtime stages must be the same Debian release (bookworm), so the C libraries match")
    if "slim" not in runtime["image"]:
        problems.add(where, f"the runtime stage starts from '{runtime['image']}', not a slim Debian")
    build_text = " ".join(i["value"] for i in build["body"] if i["instruction"] == "RUN")
    if "-c release" not in build_text:
        problems.add(where, "the build stage does not build in release mode")

    body = runtime["body"]
    kinds = [i["instruction"] for i in body]
    users = [i for i in body if i["instruction"] == "USER"]
    if not users:
        problems.add(where, "the runtime stage has no USER: it would run as root")
    else:
        user = users[-1]["value"].split(":")[0].strip()
        if user in ("root", "0") or not user.isdigit():
            problems.add(where, f"USER {users[-1]['value']}: the final user must be a numeric non-root uid (Kubernetes runAsNonRoot checks it)")
        later = [i for i in body[body.index(users[-1]) + 1 :] if i["instruction"] == "RUN"]
        if later:
            problems.add(where, f"line {later[0]['startline'] + 1}: RUN after the final USER")
    healthchecks = [i for i in body if i["instruction"] == "HEALTHCHECK"]
    if not healthchecks or healthchecks[-1]["value"].strip().upper().startswith("NONE"):
        problems.add(where, "the runtime stage has no HEALTHCHECK")
    elif "/healthz" not in healthchecks[-1]["value"]:
        problems.add(where, "the HEALTHCHECK does not ask /healthz")
    exposed = set()
    for instruction in body:
        if instruction["instruction"] == "EXPOSE":
            exposed.update(port.split("/")[0] for port in instruction["value"].split())
    if not PORTS <= exposed:
        problems.add(where, f"EXPOSE lacks {sorted(PORTS - exposed)}")
    runtime_text = " ".join(i["value"] for i in body if i["instruction"] == "RUN")
    for library in RUNTIME_LIBRARIES:
        if not re.search(rf"(^|\s){re.escape(library)}(\s|$)", runtime_text):
            problems.add(where, f"the runtime stage does not install {library}, which the binaries link")
    copies = " ".join(i["value"] for i in body if i["instruction"] == "COPY" and "--from=" in i["value"])
    for binary in BINARIES:
        if binary not in copies:
            problems.add(where, f"the runtime stage does not copy {binary} from the build stage")
    if "ADD" in kinds:
        problems.add(where, "ADD in the runtime stage: use COPY")
    if "CMD" not in kinds and "ENTRYPOINT" not in kinds:
        problems.add(where, "no CMD or ENTRYPOINT")
    return problems.finish("Dockerfile")


# --- Kubernetes -----------------------------------------------------------------------------


def command_kubernetes(arguments):
    problems = Problems()
    workloads = 0
    for path in arguments.files:
        with open(path, encoding="utf-8") as handle:
            documents = [d for d in yaml.safe_load_all(handle) if d]
        for document in documents:
            kind = document.get("kind")
            name = document.get("metadata", {}).get("name")
            where = f"{rel(path)}: {kind} {name}"
            if kind in ("Deployment", "StatefulSet", "DaemonSet"):
                workloads += 1
                check_workload(where, document, problems)
    if workloads == 0:
        problems.add("kubernetes", "no workload found")
    return problems.finish("kubernetes manifests")


def check_workload(where, workload, problems):
    template = workload.get("spec", {}).get("template", {})
    pod = template.get("spec", {})
    annotations = template.get("metadata", {}).get("annotations", {})
    for key in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"):
        if key not in annotations:
            problems.add(where, f"no '{key}' annotation on the pod template")
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problems.add(where, "the pod does not set runAsNonRoot: true")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.add(where, "the pod does not use the RuntimeDefault seccomp profile")
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    tally = [c for c in containers if "tally" in c.get("image", "")]
    if not tally:
        problems.add(where, "no Tally container")
    for container in containers:
        at = f"{where} container {container.get('name')}"
        image = container.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.add(at, f"image '{image}' is not pinned to a tag")
        if not container.get("resources", {}).get("limits", {}).get("memory"):
            problems.add(at, "no memory limit")
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problems.add(at, "allowPrivilegeEscalation is not false")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.add(at, "readOnlyRootFilesystem is not true")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.add(at, "capabilities are not all dropped")
    for container in tally:
        at = f"{where} container {container.get('name')}"
        command = " ".join(container.get("command", []) + container.get("args", []))
        if "tally-collector" in command:
            if probe_path(container.get("readinessProbe")) != "/readyz":
                problems.add(at, "the collector's readiness probe is not /readyz")
            if probe_path(container.get("livenessProbe")) != "/healthz":
                problems.add(at, "the collector's liveness probe is not /healthz")
        elif "tally-agent" in command:
            if container.get("restartPolicy") != "Always" or container not in pod.get("initContainers", []):
                problems.add(at, "the agent is not a native sidecar (an init container with restartPolicy: Always)")
            if not container.get("lifecycle", {}).get("preStop"):
                problems.add(at, "the agent has no preStop hook")
            if pod.get("terminationGracePeriodSeconds", 30) < 60:
                problems.add(at, "terminationGracePeriodSeconds leaves the agent less than a minute to flush")
            if not container.get("livenessProbe"):
                problems.add(at, "the agent has no liveness probe")
            mounts = {m.get("mountPath") for m in container.get("volumeMounts", [])}
            claims = {t.get("metadata", {}).get("name") for t in workload.get("spec", {}).get("volumeClaimTemplates", [])}
            spool_mounts = [m for m in container.get("volumeMounts", []) if m.get("name") in claims]
            if not spool_mounts:
                problems.add(at, f"the spool is not on a PersistentVolume (mounts: {sorted(mounts)})")
        else:
            problems.add(at, "runs neither tally-collector nor tally-agent")


def probe_path(probe):
    return (probe or {}).get("httpGet", {}).get("path")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dockerfile = commands.add_parser("dockerfile")
    dockerfile.add_argument("file")
    kubernetes = commands.add_parser("kubernetes")
    kubernetes.add_argument("files", nargs="+")
    dashboard = commands.add_parser("dashboard")
    dashboard.add_argument("file")
    metrics = commands.add_parser("metrics")
    metrics.add_argument("--sources")
    metrics.add_argument("--output", help="write the JSON to this file instead of stdout")
    arguments = parser.parse_args()
    handler = {
        "dockerfile": command_dockerfile,
        "kubernetes": command_kubernetes,
        "dashboard": command_dashboard,
        "metrics": command_metrics,
    }[arguments.command]
    return handler(arguments)


if __name__ == "__main__":
    sys.exit(main())
