"""`train/parallelize.py`: the compiled layers' activation memory budget (`pretrain.activation_memory_budget`)
keeps fewer activations for backward and changes no number; the config refuses it without compile. The last
`pretrain.gathered_layers` layers stay gathered between micro batches (and only those), changing no number."""

from __future__ import annotations

import pytest
import torch

from biomed_llama.model.config import ModelConfig
from biomed_llama.train.config import PretrainConfig
from biomed_llama.train.parallelize import apply_compile
from tests.helpers.models import trainable_model

CFG = ModelConfig(hidden_size=64, intermediate_size=176, num_layers=2, num_heads=2, vocab_size=300,
                  max_position_embeddings=64)


def _compiled_model(budget: float):
    model = trainable_model(CFG)
    apply_compile(model, budget)
    return model


def _run(model):
    """Loss, gradients and the bytes of every tensor autograd saved for backward during one forward."""
    ids = torch.randint(3, 300, (2, 48), generator=torch.Generator().manual_seed(3))
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved)


def test_a_budget_below_one_needs_compile():
    with pytest.raises(ValueError, match="activation_memory_budget below 1 needs pretrain.compile"):
        PretrainConfig(global_batch_size=4, micro_batch_size=2, activation_memory_budget=0.5)
    assert PretrainConfig(global_batch_size=4, micro_batch_size=2, compile=True,
                          activation_memory_budget=0.5).activation_memory_budget == 0.5


@pytest.mark.slow  # two inductor compiles of a 2-layer model on the CPU (≈ 20 s)
def test_a_lower_budget_saves_less_for_backward_and_changes_no_number():
    torch._dynamo.reset()
    full_loss, full_grads, full_saved = _run(_compiled_model(1.0))
    torch._dynamo.reset()
    low_loss, low_grads, low_saved = _run(_compiled_model(0.3))
    torch._dynamo.reset()
    import torch._functorch.config as functorch_config

    _compiled_model(1.0)  # the next model of the process gets the default back
    assert functorch_config.activation_memory_budget == 1.0
    # the layers' activations are most of what is saved (the rest: embedding, head, loss)
    assert low_saved < 0.85 * full_saved, (low_saved, full_saved)
    torch.testing.assert_close(low_loss, full_loss, rtol=1e-6, atol=1e-6)
    for name, g in low_grads.items():
        torch.testing.assert_close(g, full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture
def world_of_one():
    """The default process group of a world of one (gloo), destroyed after the test."""
    from biomed_llama.train.mesh import build_mesh, init_distributed, shutdown

    try:
        yield build_mesh(init_distributed("cpu"), None)
    finally:
        shutdown()


def _sharded_step(mesh, gathered: int):
    """Two micro batches through FSDP2 on a world of one (gloo): which layers are sharded after the first
    micro batch's backward and after the last; the loss and gradients of the step."""
    from torch.distributed.tensor import DTensor

    from biomed_llama.train.parallelize import apply_fsdp, gathered_modules
    from biomed_llama.train.step import StepOptions, _fsdp_flags

    cfg4 = CFG.model_copy(update={"num_layers": 4})
    model = trainable_model(cfg4)
    cfg = PretrainConfig(global_batch_size=4, micro_batch_size=2, gathered_layers=gathered, grad_sync="every")
    apply_fsdp(model, mesh, cfg)
    opts = StepOptions(sync_every_micro=True, keep_gathered=tuple(gathered_modules(model, cfg)))
    gen = torch.Generator().manual_seed(5)
    batches = [torch.randint(3, 300, (2, 24), generator=gen) for _ in range(2)]
    sharded, losses = [], []
    for k, ids in enumerate(batches):
        _fsdp_flags(model, k, len(batches), opts)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
        sharded.append([isinstance(layer.mlp.up_proj.weight, DTensor) for layer in model.model.layers])
    grads = {n: p.grad.full_tensor().clone() for n, p in model.named_parameters()}
    return sharded, losses, grads


def test_gathered_layers_stay_gathered_between_micro_batches_and_change_no_number(world_of_one):
    sharded, losses, grads = _sharded_step(world_of_one, gathered=2)
    assert sharded == [[True, True, False, False], [True, True, True, True]]
    plain_sharded, plain_losses, plain_grads = _sharded_step(world_of_one, gathered=0)
    # FSDP's plain resharding: every layer (the last one too) is sharded again after its backward
    assert plain_sharded == [[True] * 4, [True] * 4]
    torch.testing.assert_close(losses, plain_losses, rtol=0, atol=0)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain_grads[name], rtol=0, atol=0, msg=name)


def test_gathered_layers_need_resharding_and_at_most_the_model_s_layers(world_of_one):
    from biomed_llama.errors import ConfigError
    from biomed_llama.train.parallelize import apply_fsdp

    with pytest.raises(ValueError, match="gathered_layers applies with reshard_after_forward: true"):
        PretrainConfig(global_batch_size=4, micro_batch_size=2, reshard_after_forward=False, gathered_layers=2)
    with pytest.raises(ConfigError, match="gathered_layers is 3 but the model has 2 layers"):
        apply_fsdp(trainable_model(CFG), world_of_one,
                   PretrainConfig(global_batch_size=4, micro_batch_size=2, gathered_layers=3))


# ---- pretrain.float8 (torchao float8 training, a labelled opt-in): the refusals, the modules converted, the
# float8 all-gathers with their scales precomputed after each update. torchao emulates the FP8 matmuls on the CPU.


def test_float8_is_refused_in_one_line_where_it_cannot_run(monkeypatch):
    import sys

    from biomed_llama.errors import ConfigError
    from biomed_llama.train.parallelize import check_float8

    check_float8(None, torch.device("cpu"))  # off: nothing to check
    with pytest.raises(ConfigError, match=r"float8: tensorwise needs a CUDA GPU .* this run is on cpu"):
        check_float8("tensorwise", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    with pytest.raises(ConfigError, match=r"float8: rowwise needs compute capability 8.9 .* A100-SXM4-80GB has 8.0"):
        check_float8("rowwise", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao", None)  # not installed
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    with pytest.raises(ConfigError, match="needs torchao"):
        check_float8("tensorwise", torch.device("cuda"))


def test_float8_takes_two_recipes_and_is_off_by_default():
    assert PretrainConfig().float8 is None
    assert PretrainConfig(float8="rowwise").float8 == "rowwise"
    with pytest.raises(ValueError, match="tensorwise"):
        PretrainConfig(float8="mxfp8")


def test_the_cpu_run_refuses_float8_before_training(world_of_one):
    from biomed_llama.errors import ConfigError
    from biomed_llama.train.parallelize import parallelize

    with pytest.raises(ConfigError, match="float8: tensorwise needs a CUDA GPU"):
        parallelize(trainable_model(CFG), world_of_one, PretrainConfig(global_batch_size=4, micro_batch_size=2,
                                                                       float8="tensorwise"))


def _ids(seed: int = 3):
    return torch.randint(3, 300, (2, 48), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_float8_converts_the_decoder_s_linear_layers_only_and_changes_the_numbers(recipe):
    pytest.importorskip("torchao.float8")
    from torchao.float8.float8_linear import Float8Linear

    from biomed_llama.train.parallelize import apply_float8

    plain, fp8 = trainable_model(CFG), trainable_model(CFG)
    converted = apply_float8(fp8, recipe, emulate=True)
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert converted == [f"model.layers.{i}.{n}" for i in range(CFG.num_layers) for n in per_layer]
    assert {n for n, m in fp8.named_modules() if isinstance(m, Float8Linear)} == set(converted)
    assert type(fp8.lm_head) is torch.nn.Linear  # the LM head stays in high precision
    # the same weights: FP8 rounding moves the loss a little, not far (a random-init model, fp32 otherwise)
    assert torch.equal(fp8.model.layers[0].mlp.up_proj.weight, plain.model.layers[0].mlp.up_proj.weight)
    loss, loss_fp8 = (m(input_ids=_ids(), labels=_ids()).loss for m in (plain, fp8))
    assert loss_fp8 != loss
    torch.testing.assert_close(loss_fp8, loss, rtol=0.01, atol=0)
    loss_fp8.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fp8.parameters())


def test_tensorwise_float8_gathers_in_float8_and_precomputes_the_scales_once_per_update(world_of_one):
    pytest.importorskip("torchao.float8")
    from torchao.float8.fsdp_utils import WeightWithDynamicFloat8CastTensor

    from biomed_llama.train.parallelize import _precompute_float8_scales_after_each_update, apply_float8, apply_fsdp

    model = trainable_model(CFG)
    apply_float8(model, "tensorwise", emulate=True)
    apply_fsdp(model, world_of_one, PretrainConfig(global_batch_size=4, micro_batch_size=2, float8="tensorwise"))
    _precompute_float8_scales_after_each_update(model)
    # layer 0 reshards after forward (the last layer does not), so a forward alone leaves its weight sharded
    shard = model.model.layers[0].self_attn.o_proj.weight._local_tensor  # (`to_local()` would make a new wrapper)
    assert isinstance(shard, WeightWithDynamicFloat8CastTensor)
    assert shard._precomputed_scale is None

    def expected():  # the float8 range over the weight's amax
        return torch.finfo(torch.float8_e4m3fn).max / shard._tensor.abs().max().double()

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):  # each forward after an update of this model's optimizer: the scales of the new weights
        loss = model(input_ids=_ids(), labels=_ids()).loss
        torch.testing.assert_close(shard._precomputed_scale.double(), expected(), rtol=1e-6, atol=0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # it trains
    model(input_ids=_ids(), labels=_ids())
    with torch.no_grad():
        shard._tensor.mul_(2.0)  # a change no optimizer step of this model made
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)  # another model's optimizer
    other.step()
    before = shard._precomputed_scale.clone()
    model(input_ids=_ids(), labels=_ids())
    assert torch.equal(shard._precomputed_scale, before)  # not recomputed: no update of this model
    opt.step()  # (no gradients: AdamW leaves the weights alone, but it is this model's step)
    model(input_ids=_ids(), labels=_ids())
    torch.testing.assert_close(shard._precomputed_scale.double(), expected(), rtol=1e-6, atol=0)


@pytest.mark.slow  # three tiny CPU runs through the whole pretrain path (≈ 30 s)
def test_a_float8_run_resumes_exactly_and_exports_plain_weights(tmp_path, monkeypatch):
    """The CLI path of a float8 run, its FP8 matmuls emulated on the CPU (the GPU checks are skipped): checkpoints,
    an exact resume (the scales of the loaded weights, not of the empty ones DCP's optimizer init stepped), and an
    HF export of plain weights."""
    pytest.importorskip("torchao.float8")
    import shutil

    from biomed_llama.train import parallelize as P
    from biomed_llama.train.checkpoint import latest_checkpoint
    from biomed_llama.train.pretrain import run_pretrain
    from tests.helpers import train as H

    monkeypatch.setattr(P, "check_float8", lambda recipe, device: None)
    real = P.float8_config
    monkeypatch.setattr(P, "float8_config", lambda recipe, emulate=False: real(recipe, emulate=True))
    tokens = H.make_tokens(tmp_path / "tokens")

    def run():
        raw = H.tiny_params(tmp_path / "fp8", tokens, float8="tensorwise", checkpoint_every=3)
        raw["model"].update(hidden_size=64, intermediate_size=176, num_heads=4)
        return run_pretrain(H.validate(raw))

    straight = run()
    (run_dir,) = H.run_dirs(tmp_path / "fp8" / "ckpt")
    shutil.rmtree(latest_checkpoint(run_dir))  # resume from step 3
    again = run()
    assert len(again.losses) == 6 and all(again.losses[s] == straight.losses[s] for s in straight.losses), \
        (again.losses, straight.losses)
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "fp8" / "model")
    assert type(exported.model.layers[0].mlp.up_proj.weight.data) is torch.Tensor
