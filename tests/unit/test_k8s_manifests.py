"""deploy/k8s (Kustomize base + dev overlay) is valid against the Kubernetes API of one named
version and agrees with the code: every service in services/manifest.yaml has a Deployment,
a Service and a PodDisruptionBudget at its port, probes on /health and /ready, settings its
code reads, and references only ConfigMap and Secret keys that the manifests define.

No cluster and no kubectl: the kustomizations are rendered here. They use only Kustomize's
simplest features (resources, namespace, replicas, JSON 6902 patches and a ConfigMap merge
patch), so the renderer stays a few lines, and it refuses any other field rather than
ignoring it: a kustomization that grows beyond it fails this test until the renderer (or a
packaged kustomize) follows.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from events.supervisor import load_manifest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes minor still in common support when these were written; strict mode
# also refuses fields the schema does not know (a misspelt key would be ignored by a cluster).
KUBERNETES_VERSION = "1.31"
KUSTOMIZATIONS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev"}
# Copied from Strimzi's namespace by the operator (README: Kubernetes); never in the repo.
EXTERNAL_SECRETS = {"choreo-kafka-ca"}
CLUSTER_SCOPED = {"Namespace"}
KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "replicas", "patches"}

Resource = dict[str, Any]


def _documents(path: Path) -> list[Resource]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _targets(resources: list[Resource], target: dict[str, str]) -> list[Resource]:
    return [
        r
        for r in resources
        if all(
            (r["kind"] if key == "kind" else r["metadata"]["name"]) == value
            for key, value in target.items()
        )
    ]


def _json_patch(resource: Resource, ops: list[dict[str, Any]]) -> None:
    for op in ops:
        assert op["op"] in {"replace", "add"}, f"renderer knows replace/add only: {op}"
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = resource
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in node, f"{op['path']}: nothing to replace"
            node[last] = op["value"]


def render(directory: Path) -> list[Resource]:
    """What `kubectl kustomize directory` prints, for the features these kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    assert not unknown, f"{directory}: the test's renderer does not know {unknown}"
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources += render(path) if path.is_dir() else _documents(path)
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        if isinstance(body, list):
            matched = _targets(resources, patch["target"])
            assert matched, f"{patch}: matches nothing"
            for resource in matched:
                _json_patch(resource, body)
        else:
            # A merge patch of a ConfigMap's data is a plain dictionary update.
            assert body["kind"] == "ConfigMap" and set(body) <= {
                "apiVersion",
                "kind",
                "metadata",
                "data",
            }
            (resource,) = _targets(
                resources, {"kind": "ConfigMap", "name": body["metadata"]["name"]}
            )
            resource["data"].update(body["data"])
    for replicas in kustomization.get("replicas", []):
        (deployment,) = _targets(resources, {"kind": "Deployment", "name": replicas["name"]})
        deployment["spec"]["replicas"] = replicas["count"]
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return copy.deepcopy(resources)


RENDERED = {name: render(path) for name, path in KUSTOMIZATIONS.items()}
# The manifest's stand-ins of third parties (``stand_in: true``: the payment provider, the
# carrier) are not deployed: in a cluster payments and shipping call the real ones by URL.
STAND_INS = {
    name
    for name, body in yaml.safe_load((ROOT / "services" / "manifest.yaml").read_text())[
        "services"
    ].items()
    if body.get("stand_in")
}
SERVICES = {s.name: s for s in load_manifest() if s.name not in STAND_INS}


def of_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def pod_specs(resources: list[Resource]) -> dict[str, Resource]:
    """Every pod template: the Deployments' and the topics Job's."""
    return {
        f"{r['kind']}/{r['metadata']['name']}": r["spec"]["template"]["spec"]
        for r in resources
        if r["kind"] in {"Deployment", "Job"}
    }


def settings_fields(service: str) -> set[str]:
    settings_cls = importlib.import_module(f"services.{service}.app").Settings
    return {f.upper() for f in settings_cls.model_fields}


@pytest.mark.parametrize("layout", KUSTOMIZATIONS)
def test_every_manifest_is_valid_for_the_named_kubernetes_version(layout):
    resources = RENDERED[layout]
    assert resources
    for resource in resources:
        kind_name = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{layout}: {kind_name}: {exc.message} at {list(exc.path)}")


def test_strict_validation_refuses_a_misspelt_field():
    """The validator is live: the same Deployment with one key misspelt is refused."""
    deployment = copy.deepcopy(of_kind(RENDERED["base"], "Deployment")["orders"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("layout", KUSTOMIZATIONS)
def test_every_service_has_a_deployment_service_and_disruption_budget(layout):
    resources = RENDERED[layout]
    deployments = of_kind(resources, "Deployment")
    services = of_kind(resources, "Service")
    budgets = of_kind(resources, "PodDisruptionBudget")
    assert set(deployments) == set(SERVICES) == set(services) == set(budgets)
    for name, spec in SERVICES.items():
        deployment = deployments[name]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", spec.module]
        (port,) = container["ports"]
        assert port["containerPort"] == spec.port
        (service_port,) = services[name]["spec"]["ports"]
        assert service_port["port"] == spec.port
        assert service_port["targetPort"] in {port["name"], spec.port}
        env = {e["name"]: e for e in container["env"]}
        assert env["HTTP_PORT"]["value"] == str(spec.port)
        assert container["resources"]["requests"] and container["resources"]["limits"]


@pytest.mark.parametrize("layout", KUSTOMIZATIONS)
def test_probes_ask_health_and_ready_at_the_containers_port(layout):
    for name, deployment in of_kind(RENDERED[layout], "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (port,) = container["ports"]
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name}: {probe}"
            assert get["port"] in {port["name"], port["containerPort"]}, f"{name}: {probe}"


def test_graceful_stop_fits_in_the_termination_grace_period():
    """preStop's pause plus the services' own shutdown bound end before Kubernetes kills."""
    (config,) = of_kind(RENDERED["base"], "ConfigMap").values()
    shutdown_s = float(config["data"]["SHUTDOWN_TIMEOUT_S"])
    for name, deployment in of_kind(RENDERED["base"], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", name
        assert pod["terminationGracePeriodSeconds"] > int(command[1]) + shutdown_s, name


@pytest.mark.parametrize("layout", KUSTOMIZATIONS)
def test_pods_run_unprivileged_on_a_read_only_root(layout):
    for name, pod in pod_specs(RENDERED[layout]).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_every_reference_resolves_to_a_key_the_dev_overlay_defines():
    resources = RENDERED["dev"]
    config_maps = {n: set(r["data"]) for n, r in of_kind(resources, "ConfigMap").items()}
    secrets = {n: set(r["stringData"]) for n, r in of_kind(resources, "Secret").items()}
    seen = set()
    for name, pod in pod_specs(resources).items():
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                secret = volume["secret"]["secretName"]
                assert secret in secrets or secret in EXTERNAL_SECRETS, f"{name}: {secret}"
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, name
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                for kind, defined in (("configMapKeyRef", config_maps), ("secretKeyRef", secrets)):
                    if kind in ref:
                        key = (ref[kind]["name"], ref[kind]["key"])
                        assert key[1] in defined.get(key[0], set()), f"{name}: {key} undefined"
                        seen.add(key)
    assert ("choreo-auth", "AUTH_JWT_SECRET") in seen
    assert ("choreo-admin", "KAFKA_SASL_PASSWORD") in seen


def test_each_service_reads_the_settings_its_pod_is_given():
    """Names its Settings know, and values they accept (the dev overlay's Secrets too)."""
    resources = RENDERED["dev"]
    (config,) = of_kind(resources, "ConfigMap").values()
    secrets = {n: r["stringData"] for n, r in of_kind(resources, "Secret").items()}
    read_by_some = set()
    for name, deployment in of_kind(resources, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = dict(config["data"])
        for item in container["env"]:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            env[item["name"]] = secrets[ref["name"]][ref["key"]] if ref else item["value"]
        fields = settings_fields(name)
        read_by_some |= fields
        unknown = {e["name"] for e in container["env"]} - fields
        assert not unknown, f"{name}: its pod sets {unknown}, which its settings do not read"
        assert ("DATABASE_URL" in env) == ("DATABASE_URL" in fields), name
        settings_cls = importlib.import_module(f"services.{name}.app").Settings
        # As from the environment: what this service does not read is not its business.
        given = {k.lower(): v for k, v in env.items() if k in fields}
        settings = settings_cls(_env_file=None, **given)
        assert settings.http_port == SERVICES[name].port
        assert settings.kafka_sasl_username == name
    assert set(config["data"]) <= read_by_some


def test_the_dev_overlay_scales_and_places_the_base():
    base = of_kind(RENDERED["base"], "Deployment")
    dev = of_kind(RENDERED["dev"], "Deployment")
    assert all(d["spec"]["replicas"] == 1 for d in base.values())
    assert {n for n, d in dev.items() if d["spec"]["replicas"] == 2} == set(SERVICES) - {
        "analytics"
    }
    assert {r["metadata"].get("namespace") for r in RENDERED["dev"]} == {"choreo-dev", None}
    (namespace,) = of_kind(RENDERED["dev"], "Namespace")
    assert namespace == "choreo-dev"


@pytest.mark.parametrize("layout", KUSTOMIZATIONS)
def test_the_ingress_routes_to_services_that_exist(layout):
    services = of_kind(RENDERED[layout], "Service")
    (ingress,) = of_kind(RENDERED[layout], "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    backends = {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert backends <= set(services)
    assert {"orders", "query"} <= backends
    (config,) = of_kind(RENDERED[layout], "ConfigMap").values()
    assert rule["host"] in config["data"]["ALLOWED_HOSTS"].split(",")


def test_the_topics_job_runs_as_the_admin_principal():
    (job,) = of_kind(RENDERED["base"], "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["choreo", "topics", "apply"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KAFKA_SASL_USERNAME"]["value"] == "admin"
