"""Flow matching for sparse field reconstruction: observe a fraction of an image's pixels (values
and coordinates) and sample the whole continuous field at any coordinates.

The model, in the order a sample is drawn:

1. **Encode the observations** (once per set of samples; ``encoder.PointEncoder``): each observed
   pixel is a token (its value and Fourier features of its coordinate); the tokens, ordered along
   a space-filling curve, with learnable position tokens (LPs) interleaved, pass through a BiMamba
   stack.
2. **Condition every query** (once per set of samples): a query reads its ``neighbours`` nearest
   observations (``decoders.NeighbourReader`` (their encoded tokens, values and offsets in base-grid pixels, in the manner of
   LIIF's local reading)) and its cell size (the pixel footprint of the render). Beside the
   learned features it gets a *guide*: the normalised convolution of the observations (a Gaussian
   of ``guide_sigma`` base pixels) or (``guide="linear"``) their piecewise-linear interpolation,
   and the observation density there. With ``grid_blocks`` > 0 a *grid refiner* sees the guide
   in context: the observations rasterised on the base grid (the guide at every cell, a mask
   of the observed cells and their values) pass through residual convolution blocks, and each
   query reads the resulting feature map where it lies (bilinearly). A linear head on top gives
   ``mu``, the model's own one-shot estimate of the field (trained by MSE, a residual over the
   guide; ``flow.estimate``).
3. **A bridge from the estimate**: the flow starts at x0 = mu + ``noise_scale`` * z, z a noise
   field, and carries it to the field x1 along x_t = (1 - t) x0 + t x1. The network predicts x1
   from x_t, preconditioned as in EDM (``flow.bridge``): x1_hat = mu + c_skip (x_t - mu) + c_out F,
   and the velocity is (x1_hat - x_t) / (1 - t). The part c_skip (x_t - mu) is the flow of a
   Gaussian field, which the default solver (``flow.sampler``, "exponential") integrates exactly:
   in w = (x_t - mu) / sigma(t) and the angle phi(t) (``bridge.angle``) the ODE is dw/dphi = F, so a
   draw settles by 8 steps instead of drifting as Euler's in t does. With ``local_spread`` the refiner also predicts the
   spread a of x1 - mu at every query (trained by its Gaussian likelihood): the noise is then
   ``noise_scale`` * a * z and the preconditioning assumes a spread ``residual_std`` * a, so samples
   vary where the estimate is unsure and stay flat where it is sure.
   With ``colour_basis="opponent"`` the bridge runs in components of brightness, red-green and
   yellow-blue (``flow.colour``, an orthonormal rotation of RGB): the noise, the spread and the
   network's output act on each component apart, and a draw is rotated back to RGB.
   A draw's noise is taken at the model's ``temperature`` (``SparseFieldFlow.temper``: its brightness
   and its colour scaled apart; 1 as trained), which ``tasks.sparse_flow.calibrate`` sets on the
   validation split after training so that a sample carries no excess of colour grain.
4. **A joint velocity field**: at every step the queries, with their conditioning, their noisy
   values x_t and the time, are ordered along a Hilbert curve of their coordinates (the
   transposed curve on every other layer) and mixed by BiMamba blocks, so the velocity at one
   query depends on the noisy values at the others and a sample is spatially coherent.

Noise is a field of the coordinate: a Gaussian process with a squared-exponential kernel of
``noise_length`` base pixels, its channels correlated by ``noise_channel_corr`` (grain of
brightness more than of colour, as in the estimate's errors), drawn as ``noise_features`` random
Fourier features fixed by the generator (``flow.noise``), so renders at every size with one generator are samples of one
field, with no grid blocks. Values live in [-1, 1] inside the model, [0, 1] outside.
"""
from ginr_common.flow.bridge import FlowOutput, flow_matching_loss
from ginr_common.flow.config import FlowConfig
from ginr_common.flow.model import Context, Memory, Refined, SparseFieldFlow, default_cell
from ginr_common.flow.noise import coordinate_noise

__all__ = ["Context", "FlowConfig", "FlowOutput", "Memory", "Refined", "SparseFieldFlow", "coordinate_noise",
           "default_cell", "flow_matching_loss"]
