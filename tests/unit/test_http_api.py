"""The dashboard's JSON API over real HTTP, against an in-process scheduler.

Agents are simulated by ``AgentSession``s fed messages by hand; nothing leaves loopback.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from anypu import PROTOCOL_VERSION
from anypu.comm import FailureThrottle
from anypu.devices import Device
from anypu.placement import build_network
from anypu.protos import messages as m
from anypu.scheduler._http import DashboardServer, topology_layout
from anypu.scheduler._service import SchedulerService
from anypu.scheduler._state import SchedulerConfig
from tests.builders import done

TOKEN = "s3cret"
GPU = Device("gpu0", "gpu", "nvidia", "A100", 40 << 30, 156.0, "cpu", simulated=True)
NPU = Device("npu0", "npu", "huawei", "310P", 8 << 30, 22.0, "cpu", simulated=True, slices=4)
CPU = Device("cpu0", "cpu", "amd", "EPYC", 16 << 30, 0.1, "cpu")
NETWORK = {
    "sites": ["dc", "shop", "home"],
    "links": [
        {"a": "home", "b": "shop", "latency_ms": 4, "bandwidth_mbps": 500},
        {"a": "shop", "b": "dc", "latency_ms": 18, "bandwidth_mbps": 1000},
    ],
}


class Agent:
    """One fake agent: joins through the service and answers launches on demand."""

    def __init__(self, service: SchedulerService, name: str, tier: str, site: str, device):
        self.sent: list = []
        self.session = service.attach_agent(self.sent.append, lambda: None)
        join = m.Join(PROTOCOL_VERSION, TOKEN, name, tier, site=site, devices=(device,))
        self.session.receive(join)

    def launches(self) -> list[m.Launch]:
        return [x for x in self.sent if isinstance(x, m.Launch)]

    def finish(self, launch: m.Launch, run_seconds: float = 0.01) -> None:
        self.session.receive(m.JobStarted(launch.job_id, launch.attempt))
        self.session.receive(done(launch.job_id, launch.attempt, run_seconds=run_seconds))


@pytest.fixture()
def world(tmp_path: Path):
    config = SchedulerConfig(unschedulable_timeout_s=3600)
    service = SchedulerService(tmp_path, TOKEN, config, network=build_network(NETWORK))
    server = DashboardServer(service)
    agents = {
        "cloud-1": Agent(service, "cloud-1", "cloud", "dc", GPU),
        "edge-1": Agent(service, "edge-1", "edge", "shop", NPU),
        "phone-1": Agent(service, "phone-1", "device", "home", CPU),
    }
    digest = service.blobs.put(b"an artifact")
    yield service, server, agents, digest
    server.close()
    service.close()


def submit(service: SchedulerService, digest: str, **changes) -> m.JobInfo:
    fields = dict(artifact_digest=digest, inputs=b"x", flops=1e6, memory_bytes=1 << 20)
    fields.update(changes)
    return service.submit(m.SubmitRequest(**fields))


def call(server: DashboardServer, path: str, method: str = "GET", headers=None):
    request = urllib.request.Request(server.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def run_one(service, agents, digest, **changes) -> m.JobInfo:
    info = submit(service, digest, **changes)
    node = service.job_info(info.job_id).placement.node_id
    launch = next(x for x in agents[node].launches() if x.job_id == info.job_id)
    agents[node].finish(launch)
    return service.job_info(info.job_id)


def test_overview_counts_nodes_devices_jobs_and_reservations(world):
    service, server, agents, digest = world
    run_one(service, agents, digest, tiers=("cloud",), name="done")
    held = submit(service, digest, tiers=("edge",), name="held")  # placed, never finished
    submit(service, digest, device_kinds=("tpu",), name="stuck")
    status, o = call(server, "/api/v1/overview")
    assert status == 200
    assert o["nodes"]["total"] == 3
    assert {t: o["nodes"]["by_tier"][t]["ready"] for t in ("cloud", "edge", "device")} == {
        "cloud": 1,
        "edge": 1,
        "device": 1,
    }
    assert o["jobs"] == {
        "pending": 1,
        "placed": 1,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert o["queue_depth"] == 1 and o["unschedulable"] == 1
    edge = next(u for u in o["usage"] if u["tier"] == "edge")
    assert (edge["slices"], edge["reserved_slices"]) == (4, 1)
    assert edge["reserved_memory_bytes"] == 2 << 30 and edge["free_memory_bytes"] == 6 << 30
    assert o["fragmentation"] == pytest.approx(6 / (40 + 6 + 16))  # edge's 6 GiB is stranded
    assert [d["tier"] for d in o["devices"]] == ["cloud", "edge", "device"]
    assert o["placement_rate_per_s"] == pytest.approx(2 / 60)
    assert service.job_info(held.job_id).state == "placed"


def test_nodes_show_devices_slices_warm_models_and_simulation(world):
    service, server, agents, digest = world
    run_one(service, agents, digest, tiers=("edge",), name="warmup")
    submit(service, digest, tiers=("edge",), name="occupant")
    status, nodes = call(server, "/api/v1/nodes")
    assert status == 200
    assert [n["node_id"] for n in nodes] == ["cloud-1", "edge-1", "phone-1"]
    edge = nodes[1]
    assert edge["simulated"] and not nodes[2]["simulated"]
    (npu,) = edge["devices"]
    assert npu["slices"] == 4 and len(npu["reserved_slices"]) == 1
    assert [j["name"] for j in npu["jobs"]] == ["occupant"]
    assert edge["warm_models"] == [{"digest": digest, "name": "warmup"}]
    assert edge["last_heartbeat_age_s"] >= 0
    status, one = call(server, "/api/v1/nodes/phone-1")
    assert status == 200 and one["devices"][0]["simulated"] is False
    status, body = call(server, "/api/v1/nodes/nope")
    assert status == 404 and "nope" in body["error"]


def test_placements_carry_terms_and_predicted_vs_measured(world):
    service, server, agents, digest = world
    done = run_one(service, agents, digest, name="ran", origin="home")
    status, placements = call(server, "/api/v1/placements")
    assert status == 200
    (p,) = placements
    assert p["job_id"] == done.job_id and p["state"] == "succeeded"
    assert p["node_id"] == done.placement.node_id and p["origin"] == "home"
    assert set(p["terms"]) >= {"compute", "transfer", "queue"}
    assert p["predicted_seconds"] > 0 and p["run_seconds"] == pytest.approx(0.01)
    runner_up = p["runner_up"]  # why the other two nodes lost
    assert runner_up["node_id"] in set(agents) - {p["node_id"]}
    assert runner_up["predicted_seconds"] >= p["predicted_seconds"]
    assert set(runner_up["terms"]) >= {"compute", "transfer", "queue"}
    info = service.job_info(done.job_id).placement  # and the SDK sees it too
    assert info.runner_up_node == runner_up["node_id"] and info.runner_up_terms


def test_pending_lists_each_nodes_reason(world):
    service, server, _, digest = world
    stuck = submit(service, digest, device_kinds=("tpu",), name="stuck")
    status, pending = call(server, "/api/v1/pending")
    assert status == 200
    (p,) = pending
    assert p["job_id"] == stuck.job_id and p["unschedulable"]
    assert set(p["reasons"]) == {"cloud-1", "edge-1", "phone-1"}
    assert "tpu" in p["reasons"]["edge-1"]


def test_topology_has_sites_links_and_flows_from_origin(world):
    service, server, agents, digest = world
    run_one(service, agents, digest, tiers=("cloud",), origin="home")
    status, t = call(server, "/api/v1/topology")
    assert status == 200
    assert {s["site"]: s["tier"] for s in t["sites"]} == {
        "dc": "cloud",
        "shop": "edge",
        "home": "device",
    }
    link = next(lk for lk in t["links"] if {lk["a"], lk["b"]} == {"shop", "dc"})
    assert link["latency_ms"] == pytest.approx(18) and link["bandwidth_mbps"] == pytest.approx(1000)
    assert t["flows"] == [
        {"origin": "home", "node_id": "cloud-1", "jobs": 1, "last": t["flows"][0]["last"]}
    ]
    ys = {site: xy[1] for site, xy in t["layout"].items()}
    assert ys["dc"] < ys["shop"] < ys["home"]  # cloud drawn on top


def test_topology_layout_orders_rows_by_neighbours():
    sites = {"top-a": 0, "top-b": 1, "x": 2, "y": 2}
    # y hangs under top-a, x under top-b: y must be drawn left of x despite the names.
    pos = topology_layout(
        {"top-a": 0, "top-b": 0, "x": 1, "y": 1}, [("top-a", "y"), ("top-b", "x")]
    )
    assert pos["top-a"][0] < pos["top-b"][0]
    assert pos["y"][0] < pos["x"][0]
    assert pos["x"][1] > pos["top-a"][1]
    assert topology_layout(sites, []) == topology_layout(dict(reversed(sites.items())), [])


def test_cancel_needs_the_token_and_refuses_finished_jobs(world):
    service, server, agents, digest = world
    stuck = submit(service, digest, device_kinds=("tpu",))
    path = f"/api/v1/jobs/{stuck.job_id}/cancel"
    status, body = call(server, path, "POST")
    assert status == 401 and "Authorization: Bearer" in body["error"]
    status, body = call(server, path, "POST", {"Authorization": "Bearer wrong"})
    assert status == 401 and "token" in body["error"]
    status, body = call(server, path, "POST", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body["state"] == "cancelled"
    status, body = call(server, path, "POST", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 409 and "already cancelled" in body["error"]
    status, body = call(
        server, "/api/v1/jobs/job-nope/cancel", "POST", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 404 and "job-nope" in body["error"]


def test_jobs_endpoint_filters_and_validates(world):
    service, server, agents, digest = world
    done = run_one(service, agents, digest)
    submit(service, digest, device_kinds=("tpu",))
    status, jobs = call(server, "/api/v1/jobs?state=succeeded")
    assert status == 200 and [j["job_id"] for j in jobs] == [done.job_id]
    status, job = call(server, f"/api/v1/jobs/{done.job_id}")
    assert status == 200 and job["placement"]["node_id"] == done.placement.node_id
    status, body = call(server, "/api/v1/jobs?limit=many")
    assert status == 400 and "limit must be an integer" in body["error"]
    status, body = call(server, "/api/v1/jobs?state=done")
    assert status == 400 and "succeeded" in body["error"]
    status, body = call(server, "/api/v1/placements?limit=0")
    assert status == 400 and "between 1 and 1000" in body["error"]


def test_unknown_paths_and_methods_get_json_errors(world):
    _, server, _, _ = world
    status, body = call(server, "/api/v1/nodez")
    assert status == 404 and "openapi.json" in body["error"]
    status, body = call(server, "/api/v1/overview", "POST")
    assert status == 405 and "GET" in body["error"]
    status, body = call(server, "/static/../_http.py")
    assert status == 404


def test_a_non_loopback_host_header_is_refused_while_reads_are_open(world):
    _, server, _, _ = world
    status, body = call(server, "/api/v1/overview", headers={"Host": "evil.example:80"})
    assert status == 403 and "loopback" in body["error"]
    status, _ = call(server, "/api/v1/overview", headers={"Host": f"localhost:{server.port}"})
    assert status == 200


def test_closed_reads_need_the_token_for_api_and_metrics(tmp_path):
    service = SchedulerService(tmp_path, TOKEN)
    server = DashboardServer(service, open_reads=False)
    try:
        assert call(server, "/api/v1/overview")[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert call(server, "/api/v1/overview", headers=auth)[0] == 200
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url + "/metrics", timeout=10)
        assert caught.value.code == 401
        request = urllib.request.Request(server.url + "/metrics", headers=auth)
        assert b"anypu_nodes" in urllib.request.urlopen(request, timeout=10).read()
        page = urllib.request.urlopen(server.url + "/", timeout=10).read()
        assert b"anypu" in page  # the page itself holds no data: always served
    finally:
        server.close()
        service.close()


def test_a_typo_never_locks_out_the_right_token_and_a_looping_token_is_told_to_stop(tmp_path):
    waits: list[float] = []
    throttle = FailureThrottle(free_failures=3, repeat_limit=5, sleep=waits.append)
    service = SchedulerService(tmp_path, TOKEN)
    server = DashboardServer(service, open_reads=False, throttle=throttle)
    wrong = {"Authorization": "Bearer guess"}
    right = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for _ in range(4):
            status, body = call(server, "/api/v1/overview", headers=wrong)
            assert status == 401 and "refused the token" in body["error"]
        assert len(waits) == 1  # the fourth failure from this address waited
        # The right token from the same address is answered at once, however many failed.
        assert call(server, "/api/v1/overview", headers=right)[0] == 200
        assert len(waits) == 1
        # The same wrong token again and again: refused at once, with when to retry.
        request = urllib.request.Request(server.url + "/api/v1/overview", headers=wrong)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 429
        assert caught.value.headers["Retry-After"] == "60"
        assert "this token failed repeatedly" in json.loads(caught.value.read())["error"]
        assert call(server, "/api/v1/overview", headers=right)[0] == 200
        # A missing header is no guess: it is not counted against the address.
        assert call(server, "/api/v1/overview")[0] == 401
        metrics = server.metrics.render().decode()
        assert 'anypu_auth_failures_throttled_total{action="refused"} 1.0' in metrics
        assert 'anypu_auth_failures_throttled_total{action="delayed"} 1.0' in metrics
    finally:
        server.close()
        service.close()


def test_openapi_documents_exactly_the_served_routes(world):
    service, server, _, digest = world
    submit(service, digest)
    status, spec = call(server, "/api/v1/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    served = set()
    for route in server.api.routes:
        path = route.pattern.pattern.replace("([^/]+)", "{id}")
        served.add((route.method.lower(), path))
    documented = set()
    for path, ops in spec["paths"].items():
        if path.startswith("/api/v1/") and path != "/api/v1/openapi.json":
            for method in ops:
                documented.add(
                    (method, path.replace("{job_id}", "{id}").replace("{node_id}", "{id}"))
                )
    assert served == documented
    cancel = spec["paths"]["/api/v1/jobs/{job_id}/cancel"]["post"]
    assert cancel["security"] == [{"token": []}]
    # A job's document carries exactly the fields the schema names (the outcome's inline).
    _, jobs = call(server, "/api/v1/jobs")
    assert jobs and set(jobs[0]) == set(spec["components"]["schemas"]["Job"]["properties"])


def test_static_files_are_served_with_their_types(world):
    _, server, _, _ = world
    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/html") and b"app.js" in r.read()
    with urllib.request.urlopen(server.url + "/static/app.js", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/javascript")


def test_topology_sets_measured_round_trips_beside_the_declared_path():
    from anypu.placement import build_network
    from anypu.scheduler._metrics import ClusterView
    from anypu.scheduler._topology import measured_round_trips

    network = build_network(
        {
            "sites": ["dc", "shop", "scheduler"],
            "links": [
                {"a": "shop", "b": "dc", "latency_ms": 18, "bandwidth_mbps": 1000},
                {"a": "dc", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 10000},
            ],
        }
    )
    nodes = (
        m.NodeInfo(
            "edge-1", "edge", "shop", "ready", rtt_p50_s=0.041, rtt_p95_s=0.05, rtt_age_s=0.7
        ),
        m.NodeInfo(
            "edge-2", "edge", "shop", "ready", rtt_p50_s=0.039, rtt_p95_s=0.09, rtt_age_s=0.2
        ),
        m.NodeInfo("cloud-1", "cloud", "dc", "ready"),  # its agent measured nothing yet
        m.NodeInfo("phone", "device", "home", "ready", rtt_p50_s=0.08, rtt_p95_s=0.1, rtt_age_s=1),
    )
    view = ClusterView(0.0, nodes, (), {}, {}, "", 0.0, network)
    home, shop = measured_round_trips(view)
    assert shop == {
        "site": "shop",
        "to": "scheduler",
        "nodes": ["edge-1", "edge-2"],
        "measured_rtt_p50_ms": pytest.approx(39.0),
        "measured_rtt_p95_ms": pytest.approx(90.0),
        "age_s": 0.2,
        "declared_rtt_ms": pytest.approx(38.0),  # 2 × (18 + 1) ms
    }
    assert home["site"] == "home" and home["declared_rtt_ms"] is None  # not in network.yaml


def test_topology_links_show_declared_beside_measured_with_the_sample_s_age():
    from anypu.placement import PathSample, build_network, fit_network
    from anypu.scheduler._metrics import ClusterView
    from anypu.scheduler._topology import topology_view

    declared = build_network(
        {
            "sites": ["dc", "shop", "scheduler"],
            "links": [
                {"a": "shop", "b": "dc", "latency_ms": 18, "bandwidth_mbps": 1000},
                {"a": "dc", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 10000},
            ],
        }
    )
    fitted = fit_network(declared, [PathSample("dc", "scheduler", 0.004, age_s=3.0)])
    view = ClusterView(0.0, (), (), {}, {}, "", 0.0, fitted, declared)
    links = {frozenset((lk["a"], lk["b"])): lk for lk in topology_view(view, [])["links"]}
    measured = links[frozenset(("dc", "scheduler"))]
    unmeasured = links[frozenset(("shop", "dc"))]
    assert measured["latency_ms"] == pytest.approx(1.0)  # as declared
    assert measured["measured_latency_ms"] == pytest.approx(4.0, rel=0.01)
    assert measured["measured_age_s"] == 3.0 and measured["measured_bandwidth_mbps"] is None
    assert unmeasured["measured_latency_ms"] is None and unmeasured["measured_age_s"] is None
