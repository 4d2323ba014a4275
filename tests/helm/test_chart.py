"""The Helm chart: lint, render with several value sets, validate every object strictly against the Kubernetes
schemas of 1.29 to 1.33, and check what matters on the rendered objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

CHART = Path(__file__).resolve().parents[2] / "helm" / "deltamem"
CRD_API_VERSIONS = {"monitoring.coreos.com/v1"}
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
REDIS = {"store": {"type": "redis", "redis": {"urlSecret": "deltamem-redis"}}}
VALUE_SETS = {
    "default": {},
    "redis-autoscaled": REDIS | {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}},
    "secured": REDIS
    | {
        "replicaCount": 3,
        "apiKeys": {"existingSecret": "deltamem-keys"},
        "tls": {"existingSecret": "deltamem-tls", "clientCASecret": "deltamem-client-ca"},
        "networkPolicy": {"enabled": True, "allowedPodLabels": {"role": "agent"}},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "cpu-only-ephemeral": {"gpu": {"enabled": False}, "store": {"sqlite": {"size": 0}}},
    "traced": {
        "tracing": {
            "enabled": True,
            "endpoint": "http://otel-collector.observability:4317",
            "sampler": "parentbased_traceidratio",
            "samplerArg": "0.25",
            "headersSecret": "otel-headers",
        }
    },
}


def render(values: dict) -> list[dict]:
    chart = helm_python.Chart.load(str(CHART))
    manifests = chart.render(values, name="mem", namespace="agents")
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def server_container(objects) -> dict:
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_lint_is_clean():
    result = helm_python.lint(str(CHART), strict=True)
    assert result["errors"] == [], result


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_object_validates_strictly(name, kube):
    objects = render(VALUE_SETS[name])
    assert objects
    for obj in objects:
        if obj["apiVersion"] in CRD_API_VERSIONS:
            continue  # custom resources have no schema in the Kubernetes API; checked below
        kubernetes_validate.validate(obj, kube, strict=True)


def test_default_requests_a_gpu_with_grpc_probes_and_a_volume_for_the_store():
    objects = render({})
    container = server_container(objects)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert container["readinessProbe"]["grpc"]["service"] == "deltamem.v1.MemoryService"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 300
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert pod["terminationGracePeriodSeconds"] > 35  # longer than the server's notice + grace
    assert by_kind(objects, "PersistentVolumeClaim") and not by_kind(objects, "PodDisruptionBudget")
    assert by_kind(objects, "Service")[0]["spec"]["ports"][0]["appProtocol"] == "grpc"


def test_redis_store_and_secrets_come_from_existing_secrets_never_inlined():
    objects = render(VALUE_SETS["secured"])
    assert not by_kind(objects, "Secret")
    container = server_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["DELTAMEM_STORE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "deltamem-redis", "key": "url"}
    assert "--api-keys-file=/etc/deltamem/api-keys/keys" in container["args"]
    assert "--tls-client-ca=/etc/deltamem/client-ca/ca.crt" in container["args"]
    assert "tcpSocket" in container["readinessProbe"]  # kubelet's gRPC probes cannot speak TLS
    volumes = {v["name"]: v for v in by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "deltamem-keys"
    assert not by_kind(objects, "PersistentVolumeClaim")
    assert by_kind(objects, "PodDisruptionBudget") and by_kind(objects, "NetworkPolicy")
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert "--metrics-port=9090" in container["args"]
    service_ports = {p["name"] for p in by_kind(objects, "Service")[0]["spec"]["ports"]}
    assert service_ports == {"grpc", "metrics"}


def test_autoscaling_renders_an_hpa_and_no_fixed_replicas():
    objects = render(VALUE_SETS["redis-autoscaled"])
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert "replicas" not in by_kind(objects, "Deployment")[0]["spec"]


def test_tracing_is_off_by_default_and_configured_by_otel_variables_when_on():
    assert not [e for e in server_container(render({}))["env"] if e["name"].startswith("OTEL_")]
    env = {e["name"]: e for e in server_container(render(VALUE_SETS["traced"]))["env"]}
    assert env["OTEL_TRACES_EXPORTER"]["value"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4317"
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "otel-headers", "key": "headers"}
    assert "value" not in env["OTEL_EXPORTER_OTLP_HEADERS"]  # never inlined
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
    names = list(env)
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")  # $(VAR) needs it defined first


def test_cpu_only_values_request_no_gpu():
    container = server_container(render(VALUE_SETS["cpu-only-ephemeral"]))
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


@pytest.mark.parametrize(
    "values,message",
    [
        ({"replicaCount": 2}, "needs store.type=redis"),
        ({"store": {"type": "redis"}}, "urlSecret"),
        ({"tls": {"clientCASecret": "ca"}}, "needs tls.existingSecret"),
        ({"image": {"tag": "latest"}}, "image/tag"),
        ({"server": {"port": 0}}, "server/port"),
        ({"unknown": 1}, "unknown"),
        ({"tracing": {"enabled": True}}, "tracing/endpoint"),
        ({"tracing": {"enabled": True, "endpoint": "collector:4317"}}, "tracing/endpoint"),
        ({"tracing": {"sampler": "sometimes"}}, "tracing/sampler"),
    ],
)
def test_bad_values_are_refused_with_reasons(values, message):
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)
