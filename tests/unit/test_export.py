"""Export in this process, load and run as an agent would, compare with the eager call."""

from __future__ import annotations

import gc
import io
import json
import zipfile
from collections.abc import Callable

import pytest
import torch

from anypu._codec import decode, encode, pack_envelope, unpack_envelope
from anypu.agents._artifact import ArtifactError, LoadedModel, load_artifact, run_model
from anypu.errors import ExportError, InputError
from anypu.sdk import _export
from anypu.sdk._export import Artifact, ModelCache, export_model
from anypu.sdk.models import mlp, small_cnn, transformer_block


class DictHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.proj(x)
        return {"logits": y, "probs": y.softmax(-1), "pair": (y.sum(), x.mean())}


class SignDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


class UsesNumpy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.detach().numpy() * 2)


class ReturnsObject(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> object:
        return object()


@pytest.fixture(scope="module")
def mlp_artifact() -> tuple[torch.nn.Module, Artifact]:
    model = mlp()
    return model, export_model(model, model.example_inputs())


@pytest.mark.parametrize(
    "build",
    [small_cnn, transformer_block],
    ids=lambda f: f.__name__,
)
def test_demo_models_round_trip_through_torch_export(build: Callable[[], torch.nn.Module]) -> None:
    model = build()
    inputs = model.example_inputs()  # type: ignore[operator]
    artifact = export_model(model, inputs)
    assert artifact.format == "torch.export"
    assert "gpu" in artifact.device_kinds and "cpu" in artifact.device_kinds
    outputs, seconds = run_model(load_artifact(artifact.data), inputs, "cpu")
    torch.testing.assert_close(outputs, model(*inputs))
    assert seconds > 0


def test_mlp_round_trip_with_new_inputs_of_the_same_shape(mlp_artifact) -> None:
    model, artifact = mlp_artifact
    fresh = (torch.randn(32, 256),)
    outputs, _ = run_model(load_artifact(artifact.data), fresh, "cpu")
    torch.testing.assert_close(outputs, model(*fresh))


def test_dict_outputs_keep_their_structure() -> None:
    model = DictHead()
    inputs = (torch.randn(3, 8),)
    loaded = load_artifact(export_model(model, inputs).data)
    outputs, _ = run_model(loaded, inputs, "cpu")
    assert set(outputs) == {"logits", "probs", "pair"}
    torch.testing.assert_close(outputs, model(*inputs))
    # What the agent sends back must survive the wire codec (inference tensors included).
    torch.testing.assert_close(decode(encode(outputs, name="outputs")), model(*inputs))


def test_demo_models_are_seeded_without_touching_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    first, second = mlp(width=16, depth=2), mlp(width=16, depth=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not first.training
    torch.testing.assert_close(first.example_inputs(4)[0], second.example_inputs(4)[0])
    with pytest.raises(ValueError, match="not divisible"):
        transformer_block(d_model=10, nhead=4)


def test_digest_covers_the_envelope_and_is_stable_within_a_process(mlp_artifact) -> None:
    model, artifact = mlp_artifact
    again = export_model(model, model.example_inputs())
    assert again.digest == artifact.digest and again.data == artifact.data
    header, _ = unpack_envelope(artifact.data)
    assert header["format"] == "torch.export"
    import hashlib

    assert artifact.digest == hashlib.sha256(artifact.data).hexdigest()


def test_data_dependent_control_flow_falls_back_to_torchscript_keeping_both_branches() -> None:
    model = SignDependent()
    artifact = export_model(model, (torch.ones(3),))
    assert artifact.format == "torchscript"
    loaded = load_artifact(artifact.data)
    for x in (torch.ones(3), -torch.ones(3)):
        outputs, _ = run_model(loaded, (x,), "cpu")
        torch.testing.assert_close(outputs, model(x))


def test_unsupported_operation_names_the_construct_the_line_and_the_fix() -> None:
    with pytest.raises(ExportError) as caught:
        export_model(UsesNumpy(), (torch.ones(2),))
    message = str(caught.value)
    assert "cannot export UsesNumpy: an unsupported operation" in message
    assert "test_export.py" in message and "x.detach().numpy()" in message
    assert "torch.export:" in message and "torch.jit.trace:" in message
    assert "How to fix: use torch operations inside forward" in message


def test_non_tensor_output_is_explained() -> None:
    with pytest.raises(ExportError, match="a non-tensor output(.|\n)*return tensors"):
        export_model(ReturnsObject(), (torch.ones(2),))


def test_argument_mistakes_are_clear() -> None:
    with pytest.raises(InputError, match="must be a torch.nn.Module"):
        export_model(lambda x: x, (torch.ones(1),))  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"pass \(x,\)"):
        export_model(mlp(), {"x": torch.ones(1)})  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"inputs\[0\]: expected a torch.Tensor, got list"):
        export_model(mlp(), ([1.0, 2.0],))


# ----------------------------------------------------------------------------- cache


@pytest.fixture
def counting_export(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def fake_export(model: torch.nn.Module, inputs: tuple[object, ...]) -> Artifact:
        calls.append(1)
        return Artifact.build("torch.export", frozenset({"cpu"}), str(len(calls)).encode())

    monkeypatch.setattr(_export, "export_model", fake_export)
    return calls


def test_cache_reuses_until_weights_inputs_or_mode_change(counting_export: list[int]) -> None:
    cache = ModelCache()
    model = mlp(width=8, depth=2)
    x = (torch.ones(2, 8),)
    first = cache.get_or_export(model, x)
    assert cache.get_or_export(model, (torch.zeros(2, 8),)) is first
    assert len(counting_export) == 1 and cache.hits == 1

    with torch.no_grad():
        model.layers[0].weight.add_(1.0)  # in place: same pointer, new _version
    second = cache.get_or_export(model, x)
    assert second is not first

    model.layers[2].bias = torch.nn.Parameter(torch.zeros(8))  # reassigned
    assert cache.get_or_export(model, x) is not second
    assert cache.get_or_export(model, (torch.ones(3, 8),)) is not second
    model.train()
    cache.get_or_export(model, x)
    assert len(counting_export) == 5


def test_cache_forgets_dead_models_and_bounds_versions(counting_export: list[int]) -> None:
    cache = ModelCache(per_model=2)
    model = mlp(width=4, depth=1)
    for batch in (1, 2, 3):
        cache.get_or_export(model, (torch.ones(batch, 4),))
    assert len(cache) == 2
    del model
    gc.collect()
    assert len(cache) == 0


# ----------------------------------------------------------------------------- agent safety


def _rewrite(artifact: Artifact, edit: Callable[[dict[str, bytes]], None], **zip_args) -> bytes:
    header, payload = unpack_envelope(artifact.data)
    with zipfile.ZipFile(io.BytesIO(bytes(payload))) as source:
        members = {name: source.read(name) for name in source.namelist()}
    edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", **zip_args) as target:
        for name, data in members.items():
            target.writestr(name, data)
    return pack_envelope(header, out.getvalue())


def _set_pickle(members: dict[str, bytes]) -> None:
    name = next(n for n in members if n.endswith("model_weights_config.json"))
    config = json.loads(members[name])
    next(iter(config["config"].values()))["use_pickle"] = True
    members[name] = json.dumps(config).encode()


def _root(members: dict[str, bytes]) -> str:
    return next(iter(members)).split("/", 1)[0]


@pytest.mark.parametrize(
    ("edit", "zip_args", "message"),
    [
        (_set_pickle, {}, "would be unpickled"),
        (
            lambda m: m.update({f"{_root(m)}/data/sample_inputs/model.pt": b"\x80\x02N."}),
            {},
            "pickled sample inputs",
        ),
        (
            lambda m: m.update({f"{_root(m)}/data/constants/custom_obj_0": b"x"}),
            {},
            "custom objects",
        ),
        (lambda m: m.update({"version": b"1"}), {}, "one top-level folder"),
        (lambda m: None, {"compression": zipfile.ZIP_DEFLATED}, "inflating to"),
    ],
    ids=["use_pickle", "sample_inputs", "custom_obj", "legacy_layout", "zip_bomb"],
)
def test_agent_refuses_archives_that_torch_would_unpickle(
    mlp_artifact, edit, zip_args: dict[str, int], message: str
) -> None:
    _, artifact = mlp_artifact
    forged = _rewrite(artifact, edit, **zip_args)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(forged)


def test_agent_rejects_garbage_unknown_formats_and_truncation(mlp_artifact) -> None:
    _, artifact = mlp_artifact
    with pytest.raises(ValueError, match="not an anypu model artifact"):
        load_artifact(b"\x80\x04garbage" * 10)
    with pytest.raises(ArtifactError, match="'onnx' is unknown"):
        load_artifact(pack_envelope({"format": "onnx"}, b""))
    with pytest.raises(ArtifactError, match="not a readable archive"):
        load_artifact(artifact.data[: len(artifact.data) // 2])
    with pytest.raises(ArtifactError, match="not a readable archive"):
        load_artifact(pack_envelope({"format": "torchscript"}, b"PK\x03\x04junk"))


def test_run_model_accepts_a_plain_module_and_a_single_tensor() -> None:
    model = torch.nn.Linear(3, 2)
    x = torch.ones(4, 3)
    outputs, _ = run_model(model, x, "cpu")
    torch.testing.assert_close(outputs, model(x))
    assert isinstance(LoadedModel("torchscript", model).to("cpu"), LoadedModel)


def test_exported_model_checks_each_new_input_signature(mlp_artifact) -> None:
    """The graph's input check runs once per shape/dtype, and still refuses a bad one."""
    model, artifact = mlp_artifact
    loaded = load_artifact(artifact.data)
    x = torch.randn(32, 256)
    first, _ = run_model(loaded, (x,), "cpu")
    torch.testing.assert_close(first, model(x))
    again, _ = run_model(loaded, (x.clone(),), "cpu")  # accepted signature: no re-check
    torch.testing.assert_close(first, again)
    with pytest.raises(Exception, match="shape|size|dim"):
        loaded(torch.zeros(x.shape[0], x.shape[1] + 1))
    with pytest.raises(Exception, match="dtype|Double|float"):
        loaded(x.double())
    loaded.to("cpu")  # same device: the accepted signatures stay valid
    torch.testing.assert_close(run_model(loaded, (x,), "cpu")[0], first)


@pytest.mark.parametrize(
    ("inputs", "said"),
    [
        ((torch.ones(4, 9),), r"Linear raised RuntimeError on its inputs \(\(4, 9\) float32\)"),
        ((torch.ones(4, 8), torch.ones(4, 8)), r"Linear raised TypeError .* takes 2 positional"),
    ],
    ids=["wrong shape", "too many arguments"],
)
def test_inputs_the_model_cannot_take_are_the_users_error(
    inputs: tuple[torch.Tensor, ...], said: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputError, match=said):
        export_model(torch.nn.Linear(8, 8), inputs)
    assert capfd.readouterr().err == ""  # torch's own tracebacks stay off stderr


def test_a_model_left_in_training_mode_gets_a_warning() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    with pytest.warns(UserWarning, match="Sequential is in training mode: .* model.eval()"):
        ModelCache().get_or_export(model, (torch.ones(2, 4),))
