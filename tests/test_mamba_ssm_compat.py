"""Compatibility with the real mamba-ssm package (its source, with its Python reference scan
standing in for the CUDA kernel, which cannot build here)."""
import torch

import ginr_common
from ginr_common.scan import selective_scan, selective_scan_ref


def test_dispatch_to_mamba_ssm_passes_arguments_correctly(fake_mamba_ssm, seed):
    b, d, L, N, G = 2, 4, 19, 3, 2
    u, delta, z = torch.randn(b, d, L), torch.randn(b, d, L), torch.randn(b, d, L)
    A = -torch.rand(d, N) - 0.1
    B, C = torch.randn(b, G, N, L), torch.randn(b, G, N, L)
    D, bias = torch.randn(d), torch.randn(d)
    kw = dict(D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
    assert ginr_common.scan.resolve_backend("auto", "cuda") == "mamba_ssm"
    out, last = selective_scan(u, delta, A, B, C, **kw, backend="mamba_ssm")
    ref_out, ref_last = selective_scan_ref(u.double(), delta.double(), A.double(), B.double(), C.double(),
                                           **{k: v.double() if torch.is_tensor(v) else v for k, v in kw.items()})
    assert torch.allclose(out.double(), ref_out, rtol=1e-4, atol=1e-5)
    assert torch.allclose(last.double(), ref_last, rtol=1e-4, atol=1e-5)
    # and our fast CPU path agrees with the package's own reference on the same call
    theirs = fake_mamba_ssm.iface.selective_scan_ref(u, delta, A, B, C, **kw)
    ours = selective_scan(u, delta, A, B, C, **kw, backend="numba")
    assert torch.allclose(ours[0], theirs[0], rtol=1e-4, atol=1e-5)
    assert torch.allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-5)


def test_mamba_state_dicts_interchange(fake_mamba_ssm, seed):
    kw = dict(d_model=24, d_state=8, d_conv=3, expand=2, dt_rank="auto", bias=True)
    theirs = fake_mamba_ssm.simple.Mamba(**kw, use_fast_path=False)
    ours = ginr_common.Mamba(**kw)
    sd_t, sd_o = theirs.state_dict(), ours.state_dict()
    assert {k: v.shape for k, v in sd_t.items()} == {k: v.shape for k, v in sd_o.items()}
    assert torch.equal(sd_t["A_log"], sd_o["A_log"]) and torch.equal(sd_t["D"], sd_o["D"])
    x = torch.randn(2, 17, 24)
    ours.load_state_dict(sd_t)
    assert torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
    fresh = ginr_common.Mamba(**kw)
    theirs.load_state_dict(fresh.state_dict())
    assert torch.allclose(theirs(x), fresh(x), rtol=1e-4, atol=1e-5)


def test_mamba_initialisation_matches(fake_mamba_ssm):
    kw = dict(d_model=64, d_state=16, dt_min=0.001, dt_max=0.1)
    torch.manual_seed(0)
    theirs = fake_mamba_ssm.simple.Mamba(**kw, use_fast_path=False)
    torch.manual_seed(0)
    ours = ginr_common.Mamba(**kw)
    for (kt, vt), (ko, vo) in zip(theirs.state_dict().items(), ours.state_dict().items()):
        assert kt == ko
        assert torch.equal(vt, vo), f"{kt} initialised differently"


# ----------------------------------------------------------------------------- without the download
# These run always: they need no copy of mamba-ssm, only what its interface is documented to be.

MAMBA_SSM_PARAMS = {   # mamba_ssm.Mamba(d_model, d_state, d_conv, expand) parameter names and shapes
    "in_proj.weight": lambda d, n, k, e: (2 * e * d, d), "conv1d.weight": lambda d, n, k, e: (e * d, 1, k),
    "conv1d.bias": lambda d, n, k, e: (e * d,), "x_proj.weight": lambda d, n, k, e: (-(-d // 16) + 2 * n, e * d),
    "dt_proj.weight": lambda d, n, k, e: (e * d, -(-d // 16)), "dt_proj.bias": lambda d, n, k, e: (e * d,),
    "A_log": lambda d, n, k, e: (e * d, n), "D": lambda d, n, k, e: (e * d,),
    "out_proj.weight": lambda d, n, k, e: (d, e * d),
}


def test_mamba_parameter_names_and_shapes_are_mamba_ssm_s():
    d, n, k, e = 40, 8, 3, 2
    sd = ginr_common.Mamba(d_model=d, d_state=n, d_conv=k, expand=e).state_dict()
    assert {name: tuple(v.shape) for name, v in sd.items()} == {name: f(d, n, k, e) for name, f in MAMBA_SSM_PARAMS.items()}


def test_dispatch_calls_selective_scan_fn_with_every_argument(monkeypatch, seed):
    """backend='mamba_ssm' imports mamba_ssm.ops.selective_scan_interface.selective_scan_fn and passes
    every argument through (a stand-in module that records the call answers with our float64 reference)."""
    import sys
    import types

    calls = []

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        calls.append(dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                          return_last_state=return_last_state))
        return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus, return_last_state=return_last_state)

    iface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    iface.selective_scan_fn = selective_scan_fn
    for name, mod in {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
                      "mamba_ssm.ops.selective_scan_interface": iface}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(ginr_common.scan, "mamba_ssm_available", lambda: True)
    b, d, L, N = 2, 4, 9, 3
    u, delta, z = torch.randn(b, d, L), torch.randn(b, d, L), torch.randn(b, d, L)
    A, B, C = -torch.rand(d, N) - 0.1, torch.randn(b, 1, N, L), torch.randn(b, 1, N, L)
    D, bias = torch.randn(d), torch.randn(d)
    out, last = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True,
                               return_last_state=True, backend="mamba_ssm")
    assert len(calls) == 1 and calls[0]["delta_softplus"] is True and calls[0]["return_last_state"] is True
    assert calls[0]["D"] is D and calls[0]["z"] is z and calls[0]["delta_bias"] is bias
    ref = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True,
                         backend="reference")
    assert torch.allclose(out, ref[0], atol=1e-6) and torch.allclose(last, ref[1], atol=1e-6)
