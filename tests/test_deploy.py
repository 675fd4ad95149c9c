"""The deployment files, checked without a Docker engine or a Kubernetes cluster.

- every Kubernetes manifest validates against the Kubernetes OpenAPI schemas shipped inside
  the ``kubernetes-validate`` package (strict: unknown fields fail), with the network cut;
- every kustomization (the base and each overlay) renders with kustomize itself
  (``kubectl kustomize``: ``scripts/install-kubectl.sh``), and what it renders validates;
- the Deployment has the probes, the downward-API address, the Secrets and the TLS volume;
- the compose files set on a gateway only variables the gateway reads (derived from
  ``app.settings``), with values the gateway accepts;
- the Dockerfile runs the command the README documents, as a non-root user.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as k8s_validate

from app.settings import Settings, split_host_port
from app.stores.consul import ConsulConfig
from app.stores.etcd import EtcdConfig
from tests.environ import gateway_variables

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
K8S = KUBERNETES / "base"
OVERLAYS = KUBERNETES / "overlays"
CONSUL_OVERLAY = OVERLAYS / "consul"

# The oldest Kubernetes the manifests promise to fit, and the newest the validator knows.
K8S_VERSIONS = ("1.27.0", k8s_validate.latest_version())
EXAMPLE_SECRETS = "secret.example.yaml"
GATEWAY_PORT = 4122
PLACEHOLDER = "REPLACE"


# --- helpers -------------------------------------------------------------------------------


GATEWAY_VARIABLES = gateway_variables()


def load_all(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def load_one(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1, f"{path} should hold one document, holds {len(docs)}"
    return docs[0]


def k8s_manifests() -> list[Path]:
    """The resources of the base (every YAML file but the kustomization)."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for path in k8s_manifests()
        for doc in load_all(path)
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return resource("Deployment")


def pod_spec() -> dict[str, Any]:
    return deployment()["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "the gateway pod has one container"
    return containers[0]


def env_entries() -> dict[str, dict[str, Any]]:
    entries = container()["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate env entries: {names}"
    return {entry["name"]: entry for entry in entries}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def compose(name: str) -> dict[str, Any]:
    data = load_one(COMPOSE / name)
    assert isinstance(data.get("services"), dict), f"{name} has no services"
    return data


def gateways(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the repository: the gateways."""
    return {name: svc for name, svc in data["services"].items() if "build" in svc}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    ports = set()
    for spec in service.get("ports", []):
        host, _, target = str(spec).rpartition(":")
        ports.add((int(host.rpartition(":")[2]), int(target.partition("/")[0])))
    return ports


def interpolate(env: dict[str, str]) -> dict[str, str]:
    """Compose interpolation with nothing set: defaults apply, required ones get a value."""

    def one(match: re.Match[str]) -> str:
        operator, word = match.group(2) or "", match.group(3) or ""
        assert operator in ("", ":-", "-", ":?", "?"), f"unexpected {match.group(0)}"
        return word if operator in (":-", "-") else "x" * 32  # long enough for ADMIN_SECRET

    pattern = r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}"
    return {key: re.sub(pattern, one, value) for key, value in env.items()}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the test: the validation must be offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def validate_k8s(doc: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        k8s_validate.validate(doc, version, strict=True)


# --- Kubernetes: schemas -----------------------------------------------------------------


def test_the_network_guard_works(no_network: None) -> None:
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("example.com", 443), timeout=1)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.getaddrinfo("example.com", 443)


def test_the_base_has_every_kind_it_needs() -> None:
    kinds = sorted(doc["kind"] for path in k8s_manifests() for doc in load_all(path))
    for kind in ("ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"):
        assert kind in kinds, f"deploy/kubernetes has no {kind}"


@pytest.mark.parametrize("path", k8s_manifests(), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path: Path, no_network: None) -> None:
    for doc in load_all(path):
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: {doc.keys()}"
        assert doc["metadata"].get("name"), f"{path.name}: a {doc['kind']} without a name"
        validate_k8s(doc)


def _make_the_container_port_text(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"


def _misspell_a_field(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}


def _drop_the_container_name(doc: dict[str, Any]) -> None:
    del doc["spec"]["template"]["spec"]["containers"][0]["name"]


def _break_an_env_source(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"] = {"podIP": True}


@pytest.mark.parametrize(
    "mutate",
    [
        _make_the_container_port_text,
        _misspell_a_field,
        _drop_the_container_name,
        _break_an_env_source,
    ],
)
def test_the_validator_rejects_a_broken_deployment(mutate: Any, no_network: None) -> None:
    broken = copy.deepcopy(deployment())
    mutate(broken)
    with pytest.raises(k8s_validate.ValidationError):
        k8s_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_resource_but_the_placeholder_secrets() -> None:
    kustomization = load_one(K8S / "kustomization.yaml")
    assert kustomization["apiVersion"].startswith("kustomize.config.k8s.io/")
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), f"duplicates in resources: {listed}"
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization lists missing {name}"
    expected = {p.name for p in k8s_manifests()} - {EXAMPLE_SECRETS}
    assert set(listed) == expected
    image = container()["image"].rpartition(":")[0]
    assert image in {entry["name"] for entry in kustomization.get("images", [])}


# --- Kubernetes: every kustomization rendered by kustomize ----------------------------------


def kustomizations() -> list[Path]:
    return sorted(path.parent for path in KUBERNETES.rglob("kustomization.yaml"))


def kubectl() -> str:
    """kubectl on PATH or in the project's virtualenv; a missing one fails, loudly."""
    found = shutil.which("kubectl") or shutil.which(
        "kubectl", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail("kubectl is missing: run scripts/install-kubectl.sh", pytrace=False)
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize refused {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def rendered_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def test_the_layout_is_a_base_and_overlays_beside_it() -> None:
    names = [path.relative_to(KUBERNETES).as_posix() for path in kustomizations()]
    assert names == ["base", "overlays/consul", "overlays/etcd"]
    for overlay in OVERLAYS.iterdir():
        for entry in load_one(overlay / "kustomization.yaml")["resources"]:
            target = (overlay / entry).resolve()
            # An overlay inside its own base is the cycle kustomize refuses.
            assert not overlay.resolve().is_relative_to(target), f"{overlay} is inside {target}"


@pytest.mark.parametrize(
    "directory", kustomizations(), ids=lambda p: p.relative_to(KUBERNETES).as_posix()
)
def test_kustomization_renders_and_validates(directory: Path) -> None:
    docs = render(directory)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    for doc in docs:
        validate_k8s(doc)


def test_the_consul_overlay_renders_a_consul_gateway(clean_env: None) -> None:
    docs = render(CONSUL_OVERLAY)
    data = rendered_kind(docs, "ConfigMap")["data"]
    assert data["STORE_TYPE"] == "consul" and not any(k.startswith("ETCD_") for k in data)
    pod = rendered_kind(docs, "Deployment")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    names = {entry["name"] for entry in gateway["env"]}
    assert "CONSUL_HTTP_TOKEN" in names and not any(n.startswith("ETCD_") for n in names)
    assert "etcd-tls" not in {volume["name"] for volume in pod.get("volumes", [])}
    assert not any("etcd" in mount["mountPath"] for mount in gateway.get("volumeMounts", []))


def test_the_etcd_overlay_renders_the_base(clean_env: None) -> None:
    docs = render(OVERLAYS / "etcd")
    assert docs == render(K8S)
    data = rendered_kind(docs, "ConfigMap")["data"]
    assert data["STORE_TYPE"] == "etcd"
    assert EtcdConfig.from_env({"ETCD_ENDPOINTS": data["ETCD_ENDPOINTS"]}).endpoints


# --- Kubernetes: the Deployment -------------------------------------------------------------


def http_port() -> dict[str, Any]:
    ports = [p for p in container()["ports"] if p["containerPort"] == GATEWAY_PORT]
    assert len(ports) == 1, f"the container does not expose {GATEWAY_PORT}"
    return ports[0]


def test_probes_are_on_readyz_and_healthz() -> None:
    port = http_port()
    probes = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    for probe, path in probes.items():
        http = container()[probe]["httpGet"]
        assert http["path"] == path, f"{probe} on {http['path']}, not {path}"
        assert http["port"] in (port.get("name"), GATEWAY_PORT), f"{probe} on port {http['port']}"


def test_advertise_address_comes_from_the_pod_ip(clean_env: None) -> None:
    env = env_entries()
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["ADVERTISE_ADDR"]["value"] == f"$(POD_IP):{GATEWAY_PORT}"
    names = list(env)
    assert names.index("POD_IP") < names.index("ADVERTISE_ADDR"), (
        "Kubernetes only expands $(POD_IP) when POD_IP is defined earlier"
    )
    assert env["NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # What the gateway gets: a pod IP and a pod name <deployment>-<hash>-<suffix>.
    pod_name = f"{deployment()['metadata']['name']}-5d9c7b8f6c-x2k4q"
    settings = Settings(
        advertise_addr=env["ADVERTISE_ADDR"]["value"].replace("$(POD_IP)", "10.244.1.17"),
        node_id=pod_name,
        store_type="etcd",
        _env_file=None,
    )
    assert settings.advertise_addr == f"10.244.1.17:{GATEWAY_PORT}"


def test_admin_credentials_come_from_a_secret() -> None:
    env = env_entries()
    secret_names = set()
    for name in ("ADMIN_USER", "ADMIN_PASS", "ADMIN_SECRET"):
        assert "value" not in env[name], f"{name} is written into the Deployment"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        secret = resource("Secret", ref["name"])
        assert ref["key"] in secret.get("stringData", secret.get("data", {}))
        secret_names.add(ref["name"])
    assert len(secret_names) == 1, "the admin credentials live in one Secret"


def test_etcd_tls_files_come_from_a_read_only_secret_volume() -> None:
    env = env_entries()
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    mounts = {mount["name"]: mount for mount in container()["volumeMounts"]}
    tls_volumes = [v for v in volumes.values() if "secret" in v]
    assert len(tls_volumes) == 1, "one Secret volume holds the etcd TLS files"
    volume = tls_volumes[0]
    mount = mounts[volume["name"]]
    assert mount["readOnly"] is True
    assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "TLS files world-readable"
    secret = resource("Secret", volume["secret"]["secretName"])
    keys = secret.get("stringData", secret.get("data", {}))
    for name in ("ETCD_CACERT", "ETCD_CLIENT_CERT", "ETCD_CLIENT_KEY"):
        path = Path(env[name]["value"])
        assert path.parent == Path(mount["mountPath"]), f"{name}={path} is not in the volume"
        assert path.name in keys, f"{name} names {path.name}, not a key of the Secret"


def test_store_settings_come_from_the_configmap(clean_env: None) -> None:
    refs = [src["configMapRef"]["name"] for src in container().get("envFrom", [])]
    assert len(refs) == 1, "the container reads one ConfigMap"
    data = resource("ConfigMap", refs[0])["data"]
    assert data["STORE_TYPE"] == "etcd"
    assert set(data) <= GATEWAY_VARIABLES, f"unknown: {set(data) - GATEWAY_VARIABLES}"
    settings = Settings(**{k.lower(): v for k, v in data.items()}, _env_file=None)
    assert settings.store_type == "etcd"
    assert len(EtcdConfig.from_env(data).endpoints) >= 1


def test_every_variable_set_on_the_pod_is_a_gateway_setting() -> None:
    helpers = {"POD_IP"}  # only there to build ADVERTISE_ADDR
    unknown = set(env_entries()) - GATEWAY_VARIABLES - helpers
    assert not unknown, f"the gateway reads no such variable: {sorted(unknown)}"


def dockerfile_uid() -> int:
    for keyword, args in dockerfile_instructions():
        if keyword == "RUN" and (match := re.search(r"useradd\b.*--uid\s+(\d+)", args)):
            return int(match.group(1))
    raise AssertionError("the Dockerfile creates no user with a fixed --uid")


def test_the_pod_runs_locked_down() -> None:
    spec = pod_spec()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == dockerfile_uid() != 0
    sc = container()["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), f"no cpu/memory {kind}"
    assert spec["terminationGracePeriodSeconds"] >= 10
    assert spec.get("automountServiceAccountToken") is False


def labels_match(selector: dict[str, str]) -> bool:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and selector.items() <= labels.items()


def test_the_disruption_budget_keeps_a_quorum_of_gateways() -> None:
    pdb = resource("PodDisruptionBudget")["spec"]
    assert labels_match(pdb["selector"]["matchLabels"])
    assert pdb.get("minAvailable") == 2 or pdb.get("maxUnavailable") == 1, pdb
    assert deployment()["spec"]["replicas"] >= 3


def test_the_service_reaches_the_gateway_port() -> None:
    service = resource("Service")["spec"]
    assert labels_match(service["selector"])
    (port,) = service["ports"]
    assert port["port"] == GATEWAY_PORT
    assert port["targetPort"] in (http_port().get("name"), GATEWAY_PORT)


def test_example_secrets_are_marked_as_placeholders() -> None:
    for doc in load_all(K8S / EXAMPLE_SECRETS):
        assert doc["kind"] == "Secret"
        for key, value in doc["stringData"].items():
            if key != "ADMIN_USER":
                assert PLACEHOLDER in value, f"{doc['metadata']['name']}.{key} is not marked"


# --- Kubernetes: the Consul overlay ---------------------------------------------------------


def test_the_consul_overlay_patches_the_base(clean_env: None) -> None:
    kustomization = load_one(CONSUL_OVERLAY / "kustomization.yaml")
    assert kustomization["resources"] == ["../../base"]
    base = {(doc["kind"], doc["metadata"]["name"]) for p in k8s_manifests() for doc in load_all(p)}
    patches = {}
    for entry in kustomization["patches"]:
        patch = load_one(CONSUL_OVERLAY / entry["path"])
        assert (patch["kind"], patch["metadata"]["name"]) in base, f"{entry['path']} hits nothing"
        patches[patch["kind"]] = patch
    data = patches["ConfigMap"]["data"]
    assert data["STORE_TYPE"] == "consul"
    assert set(data) <= GATEWAY_VARIABLES
    ConsulConfig.from_env(data)

    (patched,) = patches["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert patched["name"] == container()["name"]
    base_env = env_entries()
    for entry in patched["env"]:
        assert entry["name"] in GATEWAY_VARIABLES
        if entry.get("$patch") == "delete":
            assert entry["name"] in base_env, f"deletes {entry['name']}, which is not there"
        else:
            assert "secretKeyRef" in entry["valueFrom"], f"{entry['name']} not from a Secret"
    removed = {e["name"] for e in patched["env"] if e.get("$patch") == "delete"}
    assert {n for n in base_env if n.startswith("ETCD_")} <= removed
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    for mount in patched["volumeMounts"]:
        assert mount["mountPath"] in mounts
    volumes = {v["name"] for v in pod_spec()["volumes"]}
    for volume in patches["Deployment"]["spec"]["template"]["spec"]["volumes"]:
        assert volume["name"] in volumes


# --- compose -------------------------------------------------------------------------------

COMPOSE_FILES = ("etcd.yml", "consul.yml")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_has_three_gateways_built_from_the_repo(name: str) -> None:
    found = gateways(compose(name))
    assert len(found) == 3, f"{name}: gateways {sorted(found)}"
    for svc in found.values():
        context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
        assert (COMPOSE / context).resolve() == ROOT
        assert "env_file" not in svc, "secrets come from ${VAR:?} interpolation"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_gateways_set_only_gateway_settings(name: str) -> None:
    for svc_name, svc in gateways(compose(name)).items():
        unknown = set(environment(svc)) - GATEWAY_VARIABLES
        assert not unknown, f"{name}/{svc_name}: the gateway reads no {sorted(unknown)}"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_gateways_are_distinct_instances(name: str, clean_env: None) -> None:
    ids, ports = set(), set()
    for svc_name, svc in gateways(compose(name)).items():
        env = environment(svc)
        assert env["ADVERTISE_ADDR"] == f"{svc_name}:{GATEWAY_PORT}"
        values: dict[str, Any] = {k.lower(): v for k, v in interpolate(env).items()}
        settings = Settings(
            **{k: v for k, v in values.items() if k in Settings.model_fields}, _env_file=None
        )
        assert settings.auth_problem() is None
        ids.add(settings.node_id)
        (published,) = published_ports(svc)
        assert published[1] == GATEWAY_PORT
        ports.add(published[0])
    assert len(ids) == 3, f"{name}: NODE_IDs are not distinct"
    assert ports == {4122, 4123, 4124}


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_secrets_are_never_written_in(name: str) -> None:
    for svc_name, svc in gateways(compose(name)).items():
        env = environment(svc)
        for var in ("ADMIN_PASS", "ADMIN_SECRET"):
            assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", env[var]), (
                f"{name}/{svc_name}: {var} must be ${{{var}:?message}}, is {env[var]!r}"
            )
    example = (COMPOSE / ".env.example").read_text()
    for var in ("ADMIN_PASS", "ADMIN_SECRET"):
        assert re.search(rf"^{var}=.*{PLACEHOLDER}", example, re.M), f"{var} not in .env.example"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_gateways_check_readyz_with_python(name: str) -> None:
    for svc_name, svc in gateways(compose(name)).items():
        test = svc["healthcheck"]["test"]
        assert isinstance(test, list), f"{svc_name}: use the exec form"
        assert test[:3] == ["CMD", "python", "-c"], f"{svc_name}: {test[:3]} (no curl in image)"
        script = test[3]
        compile(script, f"{name}:{svc_name}:healthcheck", "exec")
        assert f"127.0.0.1:{GATEWAY_PORT}/readyz" in script
        assert "$" not in script, "compose would interpolate it"


def command_flags(svc: dict[str, Any]) -> dict[str, str]:
    command = svc["command"]
    args = shlex.split(command) if isinstance(command, str) else command
    return dict(arg.lstrip("-").split("=", 1) for arg in args if "=" in arg)


def test_etcd_compose_is_a_three_member_cluster(clean_env: None) -> None:
    data = compose("etcd.yml")
    services = data["services"]
    members = {name: svc for name, svc in services.items() if "etcd" in svc.get("image", "")}
    assert len(members) == 3, sorted(members)
    for name, svc in members.items():
        flags = command_flags(svc)
        assert flags["name"] == name
        cluster = dict(item.split("=", 1) for item in flags["initial-cluster"].split(","))
        assert cluster == {m: f"http://{m}:2380" for m in members}
        assert flags["advertise-client-urls"] == f"http://{name}:2379"
    for svc in gateways(data).values():
        env = environment(svc)
        assert env["STORE_TYPE"] == "etcd"
        endpoints = EtcdConfig.from_env({"ETCD_ENDPOINTS": env["ETCD_ENDPOINTS"]}).endpoints
        assert sorted(endpoints) == sorted((m, 2379) for m in members)


def test_consul_compose_is_a_server_and_three_gateways(clean_env: None) -> None:
    data = compose("consul.yml")
    servers = {
        n: s
        for n, s in data["services"].items()
        if s.get("image", "").startswith("hashicorp/consul")
    }
    assert len(servers) == 1
    ((server_name, server),) = servers.items()
    command = server["command"]
    args = shlex.split(command) if isinstance(command, str) else command
    for arg in ("agent", "-server", "-bootstrap-expect=1", "-client=0.0.0.0", "-ui"):
        assert arg in args, f"consul command lacks {arg}"
    for svc in gateways(data).values():
        env = environment(svc)
        assert env["STORE_TYPE"] == "consul"
        consul = ConsulConfig.from_env({"CONSUL_HTTP_ADDR": env["CONSUL_HTTP_ADDR"]})
        assert split_host_port(consul.address) == (server_name, 8500)


# --- the image -----------------------------------------------------------------------------


def test_dockerfile_runs_the_documented_command() -> None:
    cmds = [args for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    assert json.loads(cmds[-1]) == ["space-cloud", "run"]
    assert "space-cloud run" in (ROOT / "README.md").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "space-cloud" in scripts, "the package installs no space-cloud command"


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the Dockerfile has no USER"
    user = users[-1].partition(":")[0]
    assert user not in ("root", "0"), f"runs as {user}"
    assert re.search(
        rf"useradd\b.*\b{re.escape(user)}\b",
        " ".join(args for keyword, args in instructions if keyword == "RUN"),
    ), f"the image never creates user {user}"
    checks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    _, _, command = checks[0].partition("CMD ")
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "Dockerfile:HEALTHCHECK", "exec")
    assert "/healthz" in argv[2]


def test_deploy_readme_covers_every_deployment() -> None:
    text = (DEPLOY / "README.md").read_text()
    for needle in ("compose/etcd.yml", "compose/consul.yml", "kubectl apply -k"):
        assert needle in text, f"deploy/README.md does not mention {needle}"


def test_dockerfile_base_image_is_pinned_to_a_release() -> None:
    bases = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(bases) == 1, bases
    image, _, tag = bases[0].partition("@")[0].partition(":")
    assert image == "python", bases[0]
    pinned = "@sha256:" in bases[0] or re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag)
    assert pinned, f"FROM {bases[0]}: a floating tag (pin Python's patch release and Debian's)"


def test_dockerfile_installs_the_lock_in_its_own_layer_before_the_code() -> None:
    instructions = dockerfile_instructions()
    installs = [i for i, (keyword, args) in enumerate(instructions) if "pip install" in args]
    assert len(installs) == 2, "one install of the lock, one of the project"
    lock, project = (instructions[i][1] for i in installs)
    assert re.search(r"pip install --require-hashes -r requirements\.lock(\s|$)", lock), lock
    assert re.search(r"pip install --no-deps \.(\s|$)", project), project
    copied_before = [args for keyword, args in instructions[: installs[0]] if keyword == "COPY"]
    assert copied_before == ["requirements.lock ./"], "only the lock precedes its layer"
    copies = [i for i, (keyword, args) in enumerate(instructions) if keyword == "COPY"]
    code = [i for i in copies if instructions[i][1].split()[0] == "app"]
    assert code and installs[0] < code[0] < installs[1]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "requirements.lock" not in ignored and "app" not in ignored
