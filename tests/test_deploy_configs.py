"""Deployment configs: parsed, checked against Ray's own schemas, and pointing at real entry points."""

import copy
import importlib
import importlib.util
import json
import re
import shlex
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
    # The repository is mounted on every node and installed there, after PyTorch's CUDA build of the pin.
    ((remote, local),) = config["file_mounts"].items()
    assert (REPO / local / "pyproject.toml").is_file()
    commands = config["setup_commands"]
    torch_install = next(i for i, c in enumerate(commands) if f"torch=={_pin('torch')} --index-url" in c)
    project_install = next(i for i, c in enumerate(commands) if c.endswith(f"pip install -e {remote}"))
    assert torch_install < project_install and "/whl/cu" in commands[torch_install]


def test_rayjob_runs_the_nightly_job():
    (job,) = _load("deploy/k8s/rayjob-nightly.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    program, flag, module, *args = shlex.split(job["spec"]["entrypoint"])
    assert (program, flag, module) == ("python", "-m", "pipelines.nightly")
    assert importlib.util.find_spec(module) is not None
    config = parse_args(args)  # the job's own command line accepts them
    assert config.input.startswith("s3://") and config.output.startswith("s3://") and config.gpus_per_actor == 1
    _check_cluster(job["spec"]["rayClusterSpec"])


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


def _check_cluster(spec: dict):
    """A KubeRay RayClusterSpec: the pinned Ray, our image everywhere, GPU workers that autoscale."""
    assert spec["rayVersion"] == _pin("ray") and spec["enableInTreeAutoscaling"]
    pods = [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]
    images = {container["image"] for pod in pods for container in pod["spec"]["containers"]}
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
    assert any(line.startswith("ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu") for line in lines)
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
