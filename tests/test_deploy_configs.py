"""Deployment configs: parsed, checked against Ray's own schemas, and pointing at real entry points."""

import copy
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from deploy import serve_app
from deploy.errors import OVERLOAD_STATUS, REQUESTS_RETRY_AFTER_S
from deploy.health import PROBE_WAIT_S
from deploy.inputs import InputLimits
from deploy.jobs import HEAD_NODE, NightlyJobs
from deploy.proxy import proxy_environment
from deploy.schemas import ServiceOptions
from deploy.serve_app import SegmentService
from pipelines.nightly import parse_args
from tca_core.allocator import INFERENCE_ENV

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = (REPO / "pyproject.toml").read_text()
RAYJOB = "deploy/k8s/rayjob-nightly.yaml"


def _pin(package: str) -> str:
    """The version pyproject.toml pins a dependency to (`"name==version"` or `"name[extras]==version"`)."""
    (version,) = re.findall(rf'"{re.escape(package)}(?:\[[^\]]*\])?==([^"]+)"', PYPROJECT)
    return version


def _load(relative: str) -> list[dict]:
    return list(yaml.safe_load_all((REPO / relative).read_text()))


def _application(serve_config: dict) -> dict:
    ServeDeploySchema.model_validate(serve_config)  # Ray's own schema of `serve deploy` configs
    (app,) = serve_config["applications"]
    return app


def _check_application(app: dict):
    """The import path resolves to the builder, which builds the app from these args."""
    module, attribute = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attribute)
    assert isinstance(builder(app["args"]), Application)
    assert {d["name"] for d in app["deployments"]} == {SegmentService.name, NightlyJobs.name}
    service = next(d for d in app["deployments"] if d["name"] == SegmentService.name)
    options = ServiceOptions.model_validate(app["args"])
    assert service["max_ongoing_requests"] >= options.max_batch_size  # a replica can fill a batch
    assert service["max_queued_requests"] > 0 and service["backpressure_config"]["retry_after_s"] > 0
    # The config's ray_actor_options replace the code's whole: it must repeat the allocator settings.
    assert service["ray_actor_options"]["runtime_env"]["env_vars"] == INFERENCE_ENV
    # One overload answer (deploy/errors.py): the config's is the code's.
    overload = {"status_code": OVERLOAD_STATUS, "retry_after_s": REQUESTS_RETRY_AFTER_S}
    assert service["backpressure_config"] == overload == SegmentService.backpressure_config.model_dump()
    jobs = next(d for d in app["deployments"] if d["name"] == NightlyJobs.name)
    assert HEAD_NODE in jobs.get("ray_actor_options", NightlyJobs.ray_actor_options).get("resources", {})


def _check_lifecycle(config: dict):
    """Health checks and graceful shutdown (deploy/serve_app.py, unless the config sets them): a check
    outlasts the probe's wait, and a stopping replica waits as long as the proxy waits for a request."""
    (app,) = config["applications"]
    service = next(d for d in app["deployments"] if d["name"] == SegmentService.name)
    assert service.get("health_check_timeout_s", serve_app.HEALTH_CHECK_TIMEOUT_S) > PROBE_WAIT_S
    shutdown = service.get("graceful_shutdown_timeout_s", serve_app.GRACEFUL_SHUTDOWN_TIMEOUT_S)
    assert shutdown >= config["http_options"]["request_timeout_s"]


def test_versions_of_the_pins_are_the_installed_ones():
    assert _pin("ray") == ray.__version__


def test_serve_config_builds_the_application():
    (config,) = _load("deploy/serve_config.yaml")
    app = _application(config)
    _check_application(app)
    _check_lifecycle(config)
    assert app["route_prefix"] == "/" and config["http_options"]["port"] == 8000


def test_ray_cluster_yaml_is_valid_for_the_cluster_launcher():
    (config,) = _load("ray_cluster.yaml")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["worker.gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):  # the schema does check node types
        jsonschema.validate(broken, schema)

    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu_workers = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_workers and all(t["max_workers"] > t["min_workers"] for t in gpu_workers)  # autoscaling
    for node_type in types.values():
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")


def test_every_cluster_node_runs_the_projects_image_and_gpu_workers_see_their_gpu():
    """The launcher's docker image is the one the KubeRay manifests run, tagged with the project's
    version; GPU workers start it with `--gpus all`, the GPU-less head without (it would not start)."""
    (config,) = _load("ray_cluster.yaml")
    docker = config["docker"]
    assert docker["image"] == _k8s_image()
    assert docker["image"].rsplit(":", 1)[1] == re.search(r'(?m)^version = "([^"]+)"', PYPROJECT).group(1)
    assert "head_image" not in docker and "worker_image" not in docker  # one image for every node
    for name, node_type in config["available_node_types"].items():
        node_docker = node_type.get("docker", {})
        assert "worker_image" not in node_docker, name
        if name == config["head_node_type"]:
            options = docker.get("run_options", []) + docker.get("head_run_options", [])
        else:  # Ray replaces the global worker_run_options with a node type's own (a dict update)
            worker_options = node_docker.get("worker_run_options", docker.get("worker_run_options", []))
            options = docker.get("run_options", []) + worker_options
        assert ("--gpus all" in options) == (node_type["resources"].get("GPU", 0) >= 1), name


def test_no_node_type_falls_back_to_rays_default_ami():
    """Ray's launcher gives a node type without ImageId its default AMI (a Deep Learning AMI with CUDA
    11.2, too old for the image's torch); every node type names AWS's current Deep Learning AMI instead."""
    from ray.autoscaler._private.aws.config import DEFAULT_AMI, _check_ami
    from ray.autoscaler._private.util import prepare_config

    (config,) = _load("ray_cluster.yaml")
    prepared = prepare_config(copy.deepcopy(config))
    before = {name: t["node_config"]["ImageId"] for name, t in prepared["available_node_types"].items()}
    _check_ami(prepared)  # what `ray up` does to the node configs
    after = {name: t["node_config"]["ImageId"] for name, t in prepared["available_node_types"].items()}
    assert after == before
    for image in after.values():
        assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/") or image.startswith("ami-")
        assert image != DEFAULT_AMI[config["provider"]["region"]]

    without = prepare_config(copy.deepcopy(config))
    del without["available_node_types"]["worker.gpu"]["node_config"]["ImageId"]
    _check_ami(without)  # the check bites: Ray would fill in its default
    assert (
        without["available_node_types"]["worker.gpu"]["node_config"]["ImageId"]
        == DEFAULT_AMI[config["provider"]["region"]]
    )


def _installs(command: str) -> bool:
    return bool(re.search(r"\b(pip|pip3|conda|apt-get|apt) install\b", command))


def test_cluster_nodes_install_nothing_over_the_image():
    """With Ray's defaults filled in (as `ray up` does), no node installs or syncs anything: the image
    holds the code, PyTorch's CUDA build and Ray, and the start commands run the image's Ray."""
    from ray.autoscaler._private.util import prepare_config

    (config,) = _load("ray_cluster.yaml")
    prepared = prepare_config(copy.deepcopy(config))
    commands = prepared["initialization_commands"] + prepared["head_setup_commands"] + prepared["worker_setup_commands"]
    for node_type in prepared["available_node_types"].values():
        commands += node_type.get("initialization_commands", []) + node_type.get("worker_setup_commands", [])
    assert not [c for c in commands if _installs(c)]
    assert not prepared["file_mounts"] and not prepared["cluster_synced_files"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in prepared[key] if "ray start" in c)
        assert " ray start " in f" {start.split(';')[-1]}"  # the `ray` on the image's PATH, no other venv
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ENV PATH=/opt/venv/bin:$PATH" in dockerfile

    defaults = copy.deepcopy(config)
    del defaults["head_setup_commands"]
    assert any(_installs(c) for c in prepare_config(defaults)["head_setup_commands"])  # why the keys are set


def test_rayjob_runs_the_nightly_job():
    (job,) = _load(RAYJOB)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    program, flag, module, *args = shlex.split(job["spec"]["entrypoint"])
    assert (program, flag, module) == ("python", "-m", "pipelines.nightly")
    assert importlib.util.find_spec(module) is not None
    config = parse_args(args)  # the job's own command line accepts them
    assert config.input.startswith("s3://") and config.output.startswith("s3://") and config.gpus_per_actor == 1
    _check_cluster(job["spec"]["rayClusterSpec"])


DAY_S = 24 * 3600


def _daily(schedule: str) -> bool:
    """A cron schedule that fires once a day: a fixed minute and hour, every day."""
    minute, hour, *days = schedule.split()
    return minute.isdigit() and hour.isdigit() and days == ["*", "*", "*"]


def test_rayjob_retries_a_failed_run_and_its_attempts_end_within_a_day():
    """backoffLimit retries the whole run (each attempt on a new RayCluster, KubeRay >= 1.2), which is
    safe because the job skips what is committed; each attempt has activeDeadlineSeconds, so all of
    them end before the next night's run."""
    (job,) = _load(RAYJOB)
    spec = job["spec"]
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] > 0
    assert (spec["backoffLimit"] + 1) * spec["activeDeadlineSeconds"] < DAY_S


def test_cron_manifests_schedule_the_rayjob_of_rayjob_nightly():
    """Both schedulers run rayjob-nightly.yaml's RayJob, once a day at the same time: the RayCronJob
    carries its spec as the template, the CronJob mounts the file itself from the ConfigMap that the
    docs create from it and `kubectl create -f`s it, with the RBAC for the calls it makes."""
    (job,) = _load(RAYJOB)

    (ray_cron,) = _load("deploy/k8s/raycronjob-nightly.yaml")
    assert (ray_cron["apiVersion"], ray_cron["kind"]) == (job["apiVersion"], "RayCronJob")
    assert ray_cron["spec"]["jobTemplate"] == job["spec"]
    assert ray_cron["metadata"]["name"] == job["metadata"]["name"]

    cron, account, role, binding = _load("deploy/k8s/cronjob-nightly.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("batch/v1", "CronJob")
    assert cron["spec"]["schedule"] == ray_cron["spec"]["schedule"] and _daily(cron["spec"]["schedule"])
    assert cron["spec"]["timeZone"] == ray_cron["spec"]["timeZone"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = volume["configMap"]["name"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RAYJOB_MANIFEST"] == f"{mount['mountPath']}/{Path(RAYJOB).name}"  # the key --from-file gives
    script = container["command"][-1]
    assert 'kubectl create -f "$RAYJOB_MANIFEST"' in script
    create = f"kubectl create configmap {configmap} --from-file={RAYJOB}"
    assert create in (REPO / "docs" / "deploy.md").read_text()
    assert create in (REPO / "deploy" / "k8s" / "cronjob-nightly.yaml").read_text()

    assert account["kind"] == "ServiceAccount" and pod["serviceAccountName"] == account["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"]
    used = set(re.findall(r"kubectl (get|create|delete) rayjob", script)) | {"create"}
    assert used <= set(rule["verbs"])


def test_rayservice_serves_the_application_of_serve_config():
    (service,) = _load("deploy/k8s/rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    app = _application(serve_config)
    _check_application(app)
    _check_lifecycle(serve_config)
    (local,) = _load("deploy/serve_config.yaml")
    reference = _application(local)
    for key in ("name", "route_prefix", "import_path"):
        assert app[key] == reference[key]
    assert set(app["args"]) == set(reference["args"])
    replicas = next(d for d in app["deployments"] if d["name"] == SegmentService.name)
    assert replicas["ray_actor_options"]["num_gpus"] == 1 and "autoscaling_config" in replicas
    _check_cluster(service["spec"]["rayClusterConfig"])


def _pods(spec: dict) -> list[dict]:
    """The pod templates of a KubeRay RayClusterSpec: head and worker groups."""
    return [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]


def _images(spec: dict) -> set[str]:
    return {container["image"] for pod in _pods(spec) for container in pod["spec"]["containers"]}


def _k8s_image() -> str:
    """The project's image: the one image of every Ray pod in the KubeRay manifests."""
    (job,) = _load(RAYJOB)
    (service,) = _load("deploy/k8s/rayservice.yaml")
    (image,) = _images(job["spec"]["rayClusterSpec"]) | _images(service["spec"]["rayClusterConfig"])
    return image


def _check_cluster(spec: dict):
    """A KubeRay RayClusterSpec: the pinned Ray, our image everywhere, GPU workers that autoscale."""
    assert spec["rayVersion"] == _pin("ray") and spec["enableInTreeAutoscaling"]
    pods = _pods(spec)
    images = _images(spec)
    assert len(images) == 1 and images.pop().split("/")[-1].startswith("tca-video:")
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["maxReplicas"] > gpu["minReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert all(pod["spec"]["serviceAccountName"] == "tca-video" for pod in pods)
    (account,) = _load("deploy/k8s/serviceaccount.yaml")
    assert account["kind"] == "ServiceAccount" and account["metadata"]["name"] == "tca-video"


def test_dockerfile_installs_torch_cuda_then_the_project():
    lines = [line.strip() for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines()]
    assert next(line for line in lines if line.startswith("FROM ")).startswith("FROM nvidia/cuda:")
    torch_install = next(i for i, line in enumerate(lines) if f"pip install torch=={_pin('torch')} --index-url" in line)
    project_install = next(i for i, line in enumerate(lines) if "pip install ." in line)
    assert torch_install < project_install
    (index,) = [line for line in lines if line.startswith("ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu")]
    base = next(line for line in lines if line.startswith("FROM ")).split(":")[1]
    assert index.rsplit("/cu", 1)[1][:2] == base.split(".")[0]  # torch's CUDA build on the base image's major version
    # The cluster launcher copies its files into the head's container with rsync and reaches workers by ssh.
    apt = next(line for line in lines if "apt-get install" in line).split()
    assert {"rsync", "openssh-client"} <= set(apt)
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_every_ray_node_applies_the_proxys_body_limit():
    """The image (every KubeRay pod) and the cluster launcher's `ray start` commands name
    deploy/proxy.py's callback, so Serve's proxies refuse oversized bodies from their headers; the
    callback imports and returns the limit at the service's default upload limit."""
    variable, callback = next(iter(proxy_environment().items()))
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"ENV {variable}={callback}" in dockerfile
    (config,) = _load("ray_cluster.yaml")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert f"export {variable}={callback};" in start, start
    module, function = callback.split(":")
    (middleware,) = getattr(importlib.import_module(module), function)()
    assert middleware.kwargs == {"limit": InputLimits().max_upload_bytes}


def test_a_process_given_the_inference_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    script = """
import resource, sys
import numpy as np
from tca_core.allocator import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def forward_pass():
    activations = [np.ones(8 * 2**20, np.uint8) for _ in range(6)]  # 48 MB held at once, then freed
forward_pass()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    forward_pass()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {
        mode: int(
            subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("defaults", "reuse")
    }
    pages = 20 * 48 * 2**20 // 4096
    assert faults["defaults"] > pages / 10, faults  # glibc hands the freed heap back and faults it in again
    assert faults["reuse"] < pages / 100, faults
