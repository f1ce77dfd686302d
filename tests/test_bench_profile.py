"""bench/kernel_profile.py: the step profile's arithmetic on hand-made kernel timelines (what the device runs read)."""

from __future__ import annotations


import pytest

from bench import kernel_profile as K

# seconds: two matmuls alone (1.0 s each), one of the same name beside an all-gather for most of its time (1.2 s),
# a compiled kernel, and idle stretches of 0.5 s after the all-gather and after the compiled kernel
TIMELINE = [("nvjet_tst_128x256", 0.0, 1.0), ("nvjet_tst_128x256", 1.0, 2.2), ("ncclDevKernel_AllGather_RING", 1.5, 2.5),
            ("triton_poi_fused_mul_0", 3.0, 3.5), ("nvjet_tst_128x256", 4.0, 5.0)]


def test_kernel_classes_follow_the_library_names() -> None:
    assert [K.kernel_class(n) for n, _, _ in TIMELINE] == ["matmul", "matmul", "collective", "compiled fused", "matmul"]
    assert K.kernel_class("cudnn_generated_fort_native_sdpa_sm90") == "attention"
    assert K.kernel_class("some_unknown_kernel") == "other"
    # the fused AdamW is the optimizer; FSDP's cast copies into the all-gather input are multi-tensor kernels too,
    # but paid per gather (the names as CUDA profiles print them)
    mta = "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
    assert K.kernel_class(mta + "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::"
                                "FusedAdamMathFunctor<float, 4, (ADAM_MODE)1, false>>") == "optimizer"
    assert K.kernel_class(mta + "TensorListMetadata<2>, at::native::(anonymous namespace)::UnaryOpFunctor<"
                                "c10::BFloat16, 2, 1, 1>, at::native::Copy<float, float>>") == "foreach"


def test_union_and_intersection() -> None:
    assert K.merged([(2, 3), (0, 1), (0.5, 1.5), (3, 4)]) == [(0, 1.5), (2, 4)]
    assert K.busy_seconds([(0, 1), (0.5, 1.5), (2, 3)]) == pytest.approx(2.5)
    assert K.intersection_seconds([(0, 2), (3, 5)], [(1, 4)]) == pytest.approx(2.0)
    assert K.intersection_seconds([], [(0, 1)]) == 0.0


def test_communication_exposure_and_matmul_slowdown() -> None:
    c = K.communication(TIMELINE)
    assert c["collective_s"] == pytest.approx(1.0)
    assert c["exposed_s"] == pytest.approx(0.3)  # 2.2–2.5: the all-gather ran with nothing beside it
    assert c["matmul_overlap_slowdown"] == pytest.approx(1.2)  # 1.2 s beside vs 1.0 s alone, same kernel
    assert c["matmul_overlapped_share"] == pytest.approx(1.2 / 3.2)


def test_communication_without_collectives() -> None:
    c = K.communication([k for k in TIMELINE if K.kernel_class(k[0]) != "collective"])
    assert c["collective_s"] == 0.0 and c["exposed_s"] == 0.0 and c["matmul_overlap_slowdown"] is None


def test_idle_gaps_name_the_kernels_either_side() -> None:
    gaps = K.idle_gaps(TIMELINE, top=5)
    assert [(round(g["s"], 6), round(g["at_s"], 6)) for g in gaps] == [(0.5, 2.5), (0.5, 3.5)]
    assert gaps[0]["after"].startswith("ncclDevKernel") and gaps[0]["before"].startswith("triton_poi")


def test_breakdown_and_its_text() -> None:
    b = K.breakdown(TIMELINE, wall_s=5.0, matmul_flops=3.2e12)
    assert b["device_busy_s"] == pytest.approx(4.0) and b["idle_share"] == pytest.approx(0.2)
    assert b["matmul_tflops"] == pytest.approx(1.0)
    text = K.format_breakdown(b)
    assert "exposed 0.300 s (6.0% of wall)" in text and "1.20x the time alone" in text
