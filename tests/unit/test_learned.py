"""What runs teach the scheduler about a model survives its restart, bounded."""

from __future__ import annotations

from anypu.devices import Device
from anypu.protos import messages as m
from anypu.scheduler._learned import Learned, Lesson
from anypu.scheduler._store import StateStore
from tests.builders import DIGEST, GIB, failed, ran
from tests.fake_cluster import FakeCluster

T4 = Device("gpu0", "gpu", "nvidia", "T4", 16 * GIB, 8.1, "cuda:0")
ASCEND = Device("npu0", "npu", "huawei", "Ascend910B", 64 * GIB, 320.0, "npu:0")


def test_timings_and_lacking_backends_survive_a_restart(fake_cluster: FakeCluster) -> None:
    gpu = fake_cluster.add_agent("gpu-1", devices=(T4,))
    npu = fake_cluster.add_agent("npu-1", devices=(ASCEND,))
    fake_cluster.submit("j1", flops=1e12)  # the fast NPU first
    lacking = failed(m.FailureCode.OPERATOR_UNSUPPORTED, "npu-1/npu0 lacks aten::tanh")
    npu.finish("j1", lacking)
    gpu.finish("j1", ran(run_seconds=0.25))
    fake_cluster.commit()
    before = fake_cluster.scheduler.learned
    assert before.timings_of(DIGEST) == {"T4": 0.25}
    fake_cluster.crash_scheduler()
    after = fake_cluster.scheduler.learned
    assert after.timings_of(DIGEST) == {"T4": 0.25}
    assert ("npu", "huawei") in after.lacking_for(DIGEST)
    # ... and placement acts on it: the model goes straight to the GPU.
    fake_cluster.submit("j2", flops=1e12)
    assert fake_cluster.scheduler.jobs["j2"].placement.node_id == "gpu-1"


def test_only_a_higher_peak_is_a_lesson_and_the_store_keeps_the_newest_models(tmp_path) -> None:
    learned = Learned(models=2)
    assert learned.used("a", 100) == Lesson("a", "peak", "", "100")
    assert learned.used("a", 50) is None
    store = StateStore(tmp_path)
    try:
        writes = [
            store.learned_write(Lesson(d, "peak", "", str(i)), float(i))
            for i, d in enumerate(["old", "mid", "new"])
        ]
        store.commit(writes)
        kept = store.load_learned(models=2)
        assert [lesson.digest for lesson in kept] == ["mid", "new"]
        assert store.load_learned(models=10) == kept  # the oldest was deleted
        again = Learned(models=2)
        again.restore([*kept, Lesson("x", "timing", "T4", "not a number")])
        assert again.peak_of("new") == 2 and again.peak_of("mid") == 1
    finally:
        store.close()
