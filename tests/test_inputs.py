"""Every bad input of the public entry points is answered by a ValueError or TypeError that names
the argument and what was expected, and what the docs promise is accepted: ``render_image`` takes
a CHW tensor, an HxWxC NumPy array (uint8 or float) and a PIL image; RGBA loses alpha, grayscale
is repeated; the flow's ``sample`` refuses empty, mismatched and degenerate observations."""
import numpy as np
import pytest
import torch
from PIL import Image

from ginr_common import FlowConfig, GINRConfig, MambaGINR, SparseFieldFlow, render_image
from ginr_common.decoders import LocalConfig
from ginr_common.tasks.sparse_flow import observe


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MambaGINR(GINRConfig(dim=16, depth=1, num_lp=4, d_state=4, patch_size=2, pixel_filter=4,
                                decoder=LocalConfig(hidden=16, n_blocks=1))).eval()


def test_render_image_takes_tensors_arrays_and_pil_images_alike(model):
    rgb = torch.rand(3, 40, 36)
    want = render_image(model, rgb, scale=1.5)
    assert want.shape == (3, 60, 54)
    u8 = (rgb * 255).round().to(torch.uint8)
    from_u8 = render_image(model, u8.float() / 255, scale=1.5)
    arr = u8.permute(1, 2, 0).numpy()                                   # (H, W, C) uint8, the NumPy layout
    assert torch.allclose(render_image(model, arr, scale=1.5), from_u8, atol=1e-6)
    assert torch.allclose(render_image(model, arr.astype(np.float32) / 255, scale=1.5), from_u8, atol=1e-6)
    assert torch.allclose(render_image(model, Image.fromarray(arr), scale=1.5), from_u8, atol=1e-6)
    assert torch.allclose(render_image(model, u8, scale=1.5), from_u8, atol=1e-6)   # a uint8 tensor
    # RGBA: alpha dropped; grayscale: repeated to three channels
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 7, np.uint8)], -1)
    assert torch.allclose(render_image(model, Image.fromarray(rgba), scale=1.5), from_u8, atol=1e-6)
    gray = arr[..., 0]
    rep = render_image(model, torch.from_numpy(np.repeat(gray[None], 3, 0)).float() / 255, size=(50, 45))
    for one in (gray, Image.fromarray(gray), torch.from_numpy(gray)[None].float() / 255):
        assert torch.allclose(render_image(model, one, size=(50, 45)), rep, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(scale=0), ValueError, r"scale must be a finite number > 0 .* got 0"),
    (dict(scale=-2), ValueError, r"scale must be a finite number > 0 .* got -2"),
    (dict(scale=float("nan")), ValueError, r"scale must be a finite number > 0"),
    (dict(scale="2"), ValueError, r"scale must be a finite number > 0 .* got '2'"),
    (dict(size=(0, 40)), ValueError, r"size must be 2 integers >= 1 .* got \(0, 40\)"),
    (dict(size=(40.5, 40)), ValueError, r"size must be 2 integers >= 1"),
    (dict(size=(40, 40, 3)), ValueError, r"size must be 2 integers >= 1"),
    (dict(), ValueError, r"give exactly one of size= or scale="),
    (dict(size=40, scale=2), ValueError, r"give exactly one of size= or scale="),
])
def test_render_image_refuses_bad_sizes_and_scales(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        render_image(model, torch.rand(3, 40, 40), **kwargs)
    assert render_image(model, torch.rand(3, 40, 40), size=48).shape == (3, 48, 48)     # one int: square


@pytest.mark.parametrize("image, error, message", [
    (torch.rand(48, 48, 3), ValueError, r"image must be \(C, H, W\), got \(48, 48, 3\), which looks channels-last: "
                                        r"pass image.permute\(2, 0, 1\)"),
    (torch.rand(2, 48, 48), ValueError, r"image has 2 channels; this model reads 3"),
    (np.random.rand(48, 48, 2), ValueError, r"image has 2 channels; this model reads 3"),
    (torch.rand(1, 3, 48, 48), ValueError, r"image must be \(C, H, W\) or \(H, W\), got shape \(1, 3, 48, 48\)"),
    (torch.rand(3, 20, 48), ValueError, r"image must be at least the model's input size 32x32, got 20x48"),
    (torch.rand(3, 48, 48) * 255, ValueError, r"image must hold values in \[0, 1\].*divide by 255"),
    (torch.full((3, 48, 48), float("nan")), ValueError, r"image must be finite"),
    (torch.randint(0, 9, (3, 48, 48)), TypeError, r"image must hold floats in \[0, 1\] or uint8 values"),
    ("astronaut.png", TypeError, r"image must be a \(C, H, W\) tensor, an \(H, W\[, C\]\) NumPy array or a PIL image"),
])
def test_render_image_names_a_bad_image(model, image, error, message):
    with pytest.raises(error, match=message):
        render_image(model, image, scale=2)


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    return SparseFieldFlow(FlowConfig(dim=16, depth=1, num_lp=4, d_state=4, hidden=16, mixer_depth=1,
                                      noise_features=16, guide="linear", grid_blocks=1, grid_width=8,
                                      local_spread=True)).eval()


def test_flow_sample_names_every_bad_observation_and_query(flow):
    oc, ov, grid, _ = observe(torch.rand(2, 3, 32, 32), 0.2)
    assert flow.sample(oc, ov, grid, steps=1).shape == (2, 1024, 3)
    cases = [
        ((oc[:, :0], ov[:, :0], grid), r"obs_coords must hold at least one image and one point, got shape \(2, 0, 2\)"),
        ((oc, ov, grid[:, :0]), r"query_coords must hold at least one image and one point, got shape \(2, 0, 2\)"),
        ((oc, ov, grid[:1]), r"obs_coords and query_coords must hold the same number of images, got 2 and 1"),
        ((oc[:1], ov[:1], grid), r"obs_coords and query_coords must hold the same number of images, got 1 and 2"),
        ((torch.full_like(oc, 0.5), ov, grid), r"obs_coords: linear interpolation needs observations that span the "
                                               r"2-D domain .* those of image 0 lie at 1 distinct point"),
        ((oc, ov[..., :2], grid), r"values must be \(B, N, 3\) matching obs_coords"),
        ((oc[..., :1], ov, grid), r"obs_coords must be \(B, N, 2\)"),
        ((oc, ov * 255, grid), r"obs_values must hold values in \[0, 1\]"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            flow.sample(*args, steps=1)
    with pytest.raises(ValueError, match=r"need at least neighbours=8 observations, got 3"):
        flow.sample(oc[:, :3], ov[:, :3], grid, steps=1)
    with pytest.raises(ValueError, match=r"steps must be >= 1, got 0"):
        flow.sample(oc, ov, grid, steps=0)
    with pytest.raises(ValueError, match=r"obs_coords and query_coords must hold the same number of images"):
        flow.posterior(oc, ov, grid[:1], k=2, steps=1)
