"""One set of device and precision rules (query.devices) for both encoders; no model is loaded here."""

from __future__ import annotations

import pytest

from query import devices
from query.devices import resolve_precision
from query.errors import CorpusSearchError, PrecisionError


@pytest.mark.parametrize("cascade", [False, True])
def test_fp16_on_the_cpu_is_a_user_error_for_both_encoders(cascade):
    with pytest.raises(PrecisionError, match="'fp16' is not supported on the CPU") as err:
        resolve_precision("fp16", "cpu", cascade=cascade)
    assert isinstance(err.value, CorpusSearchError) and isinstance(err.value, ValueError)


def test_auto_is_bf16_for_the_bi_encoder_and_the_cascade_for_the_reranker_on_native_bf16_cpus(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu", cascade=True) == "bf16+fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == resolve_precision("auto", "cpu", cascade=True) == "fp32"


@pytest.mark.parametrize("cascade", [False, True])
def test_auto_is_fp16_on_cuda_and_fp32_on_mps_for_both(cascade):
    assert resolve_precision("auto", "cuda:1", cascade=cascade) == "fp16"
    assert resolve_precision("auto", "mps", cascade=cascade) == "fp32"


def test_the_cascade_is_only_for_the_reranker_and_unknown_precisions_are_refused():
    with pytest.raises(PrecisionError, match="bf16\\+fp32"):
        resolve_precision("bf16+fp32", "cpu")
    with pytest.raises(PrecisionError, match="int4"):
        resolve_precision("int4", "cuda", cascade=True)


def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_emulated(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert resolve_precision("bf16", "cpu") == "bf16"


def test_autocast_is_a_no_op_for_fp32_and_refuses_an_unresolved_precision():
    with devices.autocast("cpu", "fp32"):
        pass
    with pytest.raises(ValueError, match="resolved precision"), devices.autocast("cpu", "auto"):
        pass
