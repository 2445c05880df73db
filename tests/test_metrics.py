"""The SSIM (``ssim_torch``, and ``ssim`` built on it) against scikit-image's, values and gradients in float64."""
import pytest
import torch
from skimage.metrics import structural_similarity

from ginr_common.metrics import ssim, ssim_torch


def test_ssim_torch_is_scikit_images_ssim_with_gradients(seed):
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(3, 3, 20, 17, generator=g, dtype=torch.float64)
    pred = (truth + 0.3 * torch.randn(truth.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    want = torch.tensor([structural_similarity(p.numpy(), t.numpy(), data_range=1.0, channel_axis=0, win_size=7)
                         for p, t in zip(pred, truth)], dtype=torch.float64)
    assert torch.allclose(ssim_torch(pred, truth), want, atol=1e-12, rtol=0)
    assert torch.allclose(ssim(pred, truth), want, atol=1e-12, rtol=0)
    small = pred[:1, :2, :9, :8].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: ssim_torch(p, truth[:1, :2, :9, :8]), (small,))
    assert torch.allclose(ssim_torch(truth, truth), torch.ones(3, dtype=torch.float64))
    vol = torch.rand(2, 1, 9, 8, 10, generator=g, dtype=torch.float64)        # volumes: a 7x7x7 window
    noisy = vol + 0.2 * torch.randn(vol.shape, generator=g, dtype=torch.float64)
    want = torch.tensor([structural_similarity(p.numpy(), t.numpy(), data_range=1.0, channel_axis=0, win_size=7)
                         for p, t in zip(noisy.clamp(0, 1), vol)], dtype=torch.float64)
    assert torch.allclose(ssim(noisy, vol), want, atol=1e-12, rtol=0)


def test_ssim_torch_names_bad_shapes():
    with pytest.raises(ValueError, match=r"at least 7 pixels a side, got \(1, 3, 6, 9\)"):
        ssim_torch(torch.rand(1, 3, 6, 9), torch.rand(1, 3, 6, 9))
    with pytest.raises(ValueError, match="of the same shape"):
        ssim_torch(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"or volumes \(B, C, D, H, W\).*got \(3, 8, 8\)"):
        ssim_torch(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
