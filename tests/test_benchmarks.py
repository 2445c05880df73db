"""The benchmark scripts run end to end on tiny settings and write what they report (their
numbers are not checked: tests check correctness, not time)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}


@pytest.mark.parametrize("script,args,keys", [
    ("encoder.py", ["--lengths", "64", "128", "--dim", "16", "--depth", "1", "--batch", "2", "--repeats", "1"],
     {"rows", "train_bimamba_faster_than_torch_from_L", "train_recompute_lighter_than_transformer_from_L",
      "inference_bimamba_lighter_than_transformer_from_L"}),
    ("decode.py", ["--profile", "smoke", "--sizes", "32", "64", "--repeats", "1"],
     {"rows", "time_per_pixel_max_over_min", "largest_peak_mb", "under_limit"}),
    ("train_throughput.py", ["--profile", "smoke", "--repeats", "1"],
     {"phases_ms", "step_ms", "images_per_s", "encoder_share", "decoder_share"}),
    ("allocator.py", ["--profile", "smoke", "--repeats", "1", "--rounds", "1"], {"rows", "speedup", "setting"}),
    ("flow_views.py", ["--n-images", "2", "--k", "2"], {"shipped"}),
    ("flow_residual.py", ["--n-images", "2", "--steps", "2"], {"shipped"}),
])
def test_benchmark_scripts_run_and_write_results(script, args, keys, tmp_path):
    out = tmp_path / "res"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(Path(str(out) + ".json").read_text())
    assert keys <= set(data)
    assert "|" in Path(str(out) + ".md").read_text()


def test_gpu_benchmark_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run for real")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scan_gpu.py")], capture_output=True, text=True,
                       env=ENV, timeout=300, cwd=ROOT)
    assert r.returncode != 0 and "needs a CUDA GPU" in r.stderr


def test_linear_filter_fit_recovers_a_known_upsampling(seed):
    """HR made from LR by a known linear map (nearest-neighbour x2 plus a shift to the right
    neighbour on odd columns): the least-squares filters reproduce it exactly."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from linear_filter import apply, fit

    lr = torch.rand(6, 3, 32, 32)
    hr2 = lr.repeat_interleave(2, -1).repeat_interleave(2, -2)
    right = torch.cat([lr[..., 1:], lr[..., -1:]], -1)          # border replicated, as the filter sees it
    hr2[..., 1::2] = right.repeat_interleave(2, -2)
    for k in (4, 6):
        w = fit(lr, hr2, k, ridge=1e-9)
        assert torch.allclose(apply(lr, w, k), hr2, atol=1e-5)


def test_flow_views_are_the_eight_symmetries_of_the_pixel_grid():
    """Every view maps the pixel centres of a square tile onto pixel centres (a permutation), and the 8
    views are 8 different permutations, the identity among them."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flow_views import VIEWS, view

    from ginr_common.fourier import make_grid

    grid = make_grid((6, 6), dtype=torch.float64)
    index = lambda c: (c * 6 - 0.5).round().long() @ torch.tensor([6, 1])  # noqa: E731  (row, col) -> raster index
    perms = []
    for v in VIEWS:
        mapped = view(grid, v)
        assert torch.allclose(mapped * 6 - 0.5, (mapped * 6 - 0.5).round(), atol=1e-9), v
        perms.append(tuple(index(mapped).tolist()))
        assert sorted(perms[-1]) == list(range(36)), v
    assert len(set(perms)) == 8 and tuple(range(36)) in perms


def test_flow_residual_statistics_in_float64():
    """The residual's standard deviation is taken on the unobserved pixels only, and its lag-1
    correlation is 1 for a field constant along rows and columns, -1 for a checkerboard, near 0 for
    white noise."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flow_residual import residual_stats

    B, H, W = 4, 16, 16
    mask = torch.zeros(B, H, W, dtype=torch.bool)
    mask[:, :8] = True
    sign = (-1.0) ** (torch.arange(H)[:, None] + torch.arange(W)).double()
    flat = torch.full((B, H, W), 0.3, dtype=torch.float64)
    flat[:, 8:] = 5.0                                   # observed pixels: not in the standard deviation
    white = torch.randn(64, H, W, dtype=torch.float64)
    r = residual_stats(torch.stack([flat, 0.2 * sign.expand(B, H, W), torch.ones(B, H, W, dtype=torch.float64)], 1), mask)
    assert abs(r["brightness"]["std"] - 0.3) < 1e-12 and abs(r["red-green"]["std"] - 0.2) < 1e-12
    assert abs(r["red-green"]["lag1"] + 1) < 1e-12 and abs(r["yellow-blue"]["lag1"] - 1) < 1e-12
    w = residual_stats(white[:, None].expand(-1, 3, -1, -1), torch.ones(64, H, W, dtype=torch.bool))
    assert abs(w["brightness"]["lag1"]) < 0.03 and abs(w["brightness"]["std"] - 1) < 0.03
