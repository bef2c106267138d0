"""The Helm chart, rendered: lint, Kubernetes schemas, values schema, and the shape the cluster needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from mq9cluster.config import load_settings
from tests.deploy.chart import CHART, NAMESPACE, ROOT, helm, one, render, template_args

FIVE = CHART / "ci" / "replicas-5-values.yaml"
# The oldest Kubernetes the chart allows (Chart.yaml kubeVersion) and the helm binary's own.
KUBERNETES_VERSIONS = ["1.27.0", "1.35.0"]


def container(docs: list[dict]) -> dict:
    return one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def env(docs: list[dict]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(docs)["env"]}


def ports(docs: list[dict]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(docs)["ports"]}


@pytest.mark.parametrize("values", [None, FIVE], ids=["default", "replicas-5"])
def test_helm_lint_strict(values: Path | None) -> None:
    helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", [None, FIVE], ids=["default", "replicas-5"])
def test_rendered_manifests_are_valid_kubernetes(values: Path | None, version: str) -> None:
    docs = render(values_file=values)
    assert {d["kind"] for d in docs} == {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget",
                                         "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_is_strict_about_unknown_fields() -> None:
    statefulset = one(render(), "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize(("value", "complaint"), [
    ("replicas=2", "/replicas"),
    ("replicas=-3", "/replicas"),
    ("persistence.size=-5Gi", "/persistence/size"),
    ("persistence.size=lots", "/persistence/size"),
    ("replica=3", "'replica' not allowed"),
    ("config.nats.bogus=1", "'bogus' not allowed"),
    ("config.options.no_such_option=1", "'no_such_option' not allowed"),
    ("config.options.raft_addr=x:1", "'raft_addr' not allowed"),  # set per pod by the chart
    ("config.options.routes=x:1", "'routes' not allowed"),
    ("config.options.max_payload=0", "/config/options/max_payload"),
    ("config.options.log_level=loud", "/config/options/log_level"),
    ("config.raft.port=70000", "/config/raft/port"),
    ("podAntiAffinity=sometimes", "/podAntiAffinity"),
    ("cluster.initialMembers=2", "/cluster/initialMembers"),
    ("cluster.initialMembers=5", "must not be below cluster.initialMembers"),  # a template check
])
def test_bad_values_fail_at_install_time(value: str, complaint: str) -> None:
    done = helm(*template_args(value), check=False)
    assert done.returncode != 0, f"{value} was accepted"
    assert complaint in done.stderr, done.stderr


def test_options_schema_is_generated_from_the_settings() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_options_schema.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_statefulset_is_a_parallel_three_member_set_with_stable_names_and_a_volume_each() -> None:
    docs = render()
    statefulset = one(docs, "StatefulSet")
    spec = statefulset["spec"]
    headless = one(docs, "Service", spec["serviceName"])
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"] == {"matchLabels": headless["spec"]["selector"]}
    affinity = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    (preferred,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    hard = one(render(values_file=FIVE), "StatefulSet")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard


def test_pods_run_unprivileged_on_a_read_only_root_with_probes_and_resources() -> None:
    docs = render()
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    main = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "monitor"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "monitor"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "monitor"}
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    writable = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/data", "/tmp"}
    assert pod["automountServiceAccountToken"] is False


def test_the_raft_and_route_ports_stay_inside_the_release() -> None:
    docs = render()
    statefulset = one(docs, "StatefulSet")
    assert set(ports(docs)) == {"nats", "raft", "cluster", "monitor"}
    headless = one(docs, "Service", statefulset["spec"]["serviceName"])
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == ports(docs)
    client = one(docs, "Service", statefulset["metadata"]["name"])
    assert client["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in client["spec"]["ports"]] == ["nats"]
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == statefulset["spec"]["selector"]
    peers_only = [{"port": "raft"}, {"port": "cluster"}]
    (peer_rule,) = [rule for rule in policy["ingress"] if rule["ports"] == peers_only]
    assert peer_rule["from"] == [{"podSelector": statefulset["spec"]["selector"]}]
    (client_rule,) = [rule for rule in policy["ingress"] if rule is not peer_rule]
    assert client_rule["ports"] == [{"port": "nats"}, {"port": "monitor"}]


def test_the_broker_config_is_one_the_broker_accepts_and_matches_the_ports(tmp_path: Path) -> None:
    docs = render(values_file=FIVE)
    statefulset = one(docs, "StatefulSet")
    configmap = one(docs, "ConfigMap")["data"]
    (config_mount,) = [m["mountPath"] for m in container(docs)["volumeMounts"] if m["name"] == "config"]
    assert container(docs)["command"] == ["/bin/sh", f"{config_mount}/boot.sh"]
    config = tmp_path / "mq9cluster.json"
    config.write_text(configmap["mq9cluster.json"])
    settings = load_settings(config)  # what `mq9cluster start -c` would do with it
    assert settings.port == ports(docs)["nats"] and settings.http_port == ports(docs)["monitor"]
    assert settings.log_level == "debug" and settings.max_payload == 2097152
    assert str(settings.data_dir) in {m["mountPath"] for m in container(docs)["volumeMounts"] if m["name"] == "data"}
    values = env(docs)
    domain = f"{statefulset['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local"
    assert values["MQ9_RAFT_ADDR"] == f"$(POD_NAME).{domain}:{ports(docs)['raft']}"
    name = statefulset["metadata"]["name"]
    assert values["MQ9_PEERS"] == ",".join(f"{name}-{i}.{domain}:{ports(docs)['raft']}" for i in range(3))
    assert values["MQ9_ROUTES"] == ",".join(f"{name}-{i}.{domain}:{ports(docs)['cluster']}" for i in range(3))
    assert values["MQ9_CLIENT_ADVERTISE"] == f"$(POD_NAME).{domain}:{ports(docs)['nats']}"
    assert settings.cluster_addr == f"0.0.0.0:{ports(docs)['cluster']}"
    assert values["BOOT_INITIAL_MEMBERS"] == "3" and statefulset["spec"]["replicas"] == 5


def test_notes_say_how_to_connect_and_scale() -> None:
    done = helm("install", "--dry-run=client", "mq9", str(CHART), "--namespace", NAMESPACE)
    notes = done.stdout[done.stdout.index("NOTES:"):]
    assert "port-forward svc/mq9-mq9cluster 4222:4222" in notes
    assert f"nats://mq9-mq9cluster.{NAMESPACE}.svc.cluster.local:4222" in notes
    assert "--reuse-values --set replicas=5" in notes
    assert "mq9cluster status --seed" in notes



def test_optional_parts_switch_off_cleanly() -> None:
    docs = render("cluster.leaveOnScaleDown=false", "networkPolicy.enabled=false",
                  "podDisruptionBudget.enabled=false", "podAntiAffinity=none")
    assert {d["kind"] for d in docs} == {"StatefulSet", "Service", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert "lifecycle" not in container(docs) and "serviceAccountName" not in pod and "affinity" not in pod
    assert all("projected" not in volume for volume in pod["volumes"])
