"""Figures used by the notebooks and the evaluation CLI. Every function returns a matplotlib
Figure (shown inline in Jupyter; ``fig.savefig`` to keep it). Nothing here selects a backend."""
import matplotlib.pyplot as plt
import torch

from ginr_common.metrics import psnr
from ginr_common.fourier import make_grid
from ginr_common.tokens import lp_diversity


def _show(ax, img, title=""):
    ax.imshow(img.detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def image_grid(images, nrow, pad=1):
    """Images (N, C, H, W) tiled ``nrow`` to a row with ``pad`` pixels between them -> one image
    (C, rows (H + pad) + pad, nrow (W + pad) + pad), e.g. for TensorBoard. (torchvision's make_grid
    does the same, but importing torchvision.utils imports triton, which the package avoids.)"""
    N, C, H, W = images.shape
    rows = -(-N // nrow)
    out = images.new_zeros(C, rows * (H + pad) + pad, nrow * (W + pad) + pad)
    for i, im in enumerate(images):
        r, c = divmod(i, nrow)
        out[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = im
    return out


def image_row(images, titles=None, size=1.6):
    """A row of images (each (C, H, W) in [0, 1])."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.3), squeeze=False)
    for i, (ax, im) in enumerate(zip(axes[0], images)):
        _show(ax, im, titles[i] if titles else "")
    fig.tight_layout()
    return fig


def training_curves(history, title=""):
    """Loss (log scale) and PSNR (train per step, validation where measured) against the step."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    steps = [r["step"] for r in history]
    a.semilogy(steps, [r["loss"] for r in history], lw=0.8)
    a.set(xlabel="step", ylabel="training loss (MSE)")
    b.plot(steps, [r["train_psnr"] for r in history], lw=0.6, alpha=0.6, label="train (batch)")
    val = [(r["step"], r["val_psnr"]) for r in history if "val_psnr" in r]
    if val:
        b.plot(*zip(*val), "o-", label="validation")
    b.set(xlabel="step", ylabel="PSNR (dB)")
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


class LiveCurves:
    """``fit(..., on_step=LiveCurves(every=100))``: redraws the training curves in place in a
    notebook every ``every`` steps (and prints a line where there is no notebook display)."""

    def __init__(self, every=100, title=""):
        self.every, self.title, self.history, self.handle = every, title, [], None

    def __call__(self, step, record):
        self.history.append(record)
        if step % self.every:
            return
        from IPython.display import display

        fig = training_curves(self.history, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def sr_figure(lr, renders, n=4, title="", baseline="bicubic", errors=True):
    """Rows: images; columns: the input, then baseline / model / ground truth at each size, PSNR
    in the titles, and with ``errors`` the absolute error maps of baseline and model (x4, clipped
    to [0, 1]) where there is a ground truth. ``renders``: {size: (baseline, model, ground truth or None)}."""
    sizes = list(renders)
    per = {s: 2 + (renders[s][2] is not None) * (1 + 2 * errors) for s in sizes}
    cols = 1 + sum(per.values())
    n = min(n, len(lr))
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
    for r in range(n):
        _show(axes[r, 0], lr[r], f"input {lr.shape[-1]}")
        c = 1
        for s in sizes:
            b, y, gt = renders[s]
            db = (lambda p: f"\n{float(psnr(p[r:r + 1], gt[r:r + 1])):.1f} dB") if gt is not None else (lambda p: "")
            _show(axes[r, c], b[r], f"{baseline} {s}{db(b)}")
            _show(axes[r, c + 1], y[r], f"model {s}{db(y)}")
            if gt is not None:
                _show(axes[r, c + 2], gt[r], f"ground truth {s}")
                if errors:
                    for j, (name, p) in enumerate(((baseline, b), ("model", y))):
                        err = ((p[r].clamp(0, 1) - gt[r]).abs().mean(0, keepdim=True) * 4).clamp(0, 1)
                        _show(axes[r, c + 3 + j], err.expand(3, -1, -1), f"|error| x4, {name}")
            c += per[s]
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def lp_placement_figure(model):
    """Where the LPs sit: in the interleaved token sequence (top) and, as the coordinates they
    stand for, on the patch grid (bottom; used by the locality bias)."""
    lp = model.encoder.lp
    n = model.encoder.tokenizer.num_patches
    lp_idx, _, _ = lp.indices(n)
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), gridspec_kw={"height_ratios": [1, 4]})
    seq = torch.zeros(n + lp.num_lp)
    seq[lp_idx] = 1
    a.imshow(seq[None].numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
    a.set(yticks=[], xlabel=f"sequence position ({n} patch tokens + {lp.num_lp} LPs, {lp.type}); black = LP")
    centres, lpc = model.encoder.tokenizer.centres.cpu(), model.lp_coords.cpu()
    b.scatter(centres[:, 1], centres[:, 0], s=6, c="lightgray", label="patch centres")
    b.scatter(lpc[:, 1], lpc[:, 0], s=30, c=range(len(lpc)), cmap="viridis", label="LP positions (colour = order)")
    b.set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xlabel="x", ylabel="y")
    b.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def lp_similarity_figure(lps):
    """Cosine similarity between the learned LP vectors (M, D); title: the LP
    diversity 1 - mean similarity (above 0.5 is healthy, below 0.3 means LPs collapsed)."""
    x = torch.nn.functional.normalize(lps.detach().float().cpu(), dim=-1)
    fig, ax = plt.subplots(figsize=(4, 3.4))
    im = ax.imshow((x @ x.t()).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax)
    ax.set(title=f"LP cosine similarity; diversity {lp_diversity(lps):.3f}", xlabel="LP", ylabel="LP")
    fig.tight_layout()
    return fig


def ablation_figure(summary, keys=(("test_psnr", "reconstruction"), ("x2_model", "render x2")), labels=None,
                    title=""):
    """Bars of each experiment's mean over its seeds with half the spread as the error bar, one panel
    per measure: ``summary`` is a results file's summary ({experiment: {key: [mean, half spread]}},
    ``benchmarks/quality.py``), ``keys`` (key, panel title) pairs, ``labels`` the experiments' names
    on the axis (default: the experiments)."""
    names = list(summary)
    labels = labels or names
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 2.8), squeeze=False)
    for ax, (key, what) in zip(axes[0], keys):
        mean, half = zip(*(summary[n][key] for n in names))
        ax.bar(range(len(names)), mean, yerr=half, capsize=3, color="tab:blue")
        ax.set_ylim(min(m - h for m, h in zip(mean, half)) - 0.5, max(m + h for m, h in zip(mean, half)) + 0.5)
        ax.set_xticks(range(len(names)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{what} (dB)", fontsize=8)
        for i, m in enumerate(mean):
            ax.text(i, m, f"{m:.1f}", ha="center", va="bottom", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def lp_footprint_figure(model, image, lps=4, scale=4):
    """What each LP holds: the image decoded from its LP latent at ``scale`` x, then, for ``lps`` LPs
    spread over the lattice (or the given indices), how much the decoded field changes when that
    one LP's vector is replaced by the mean of the image's LPs (mean |change| over the channels; the
    LP's home marked). Only a model whose decoder reads the LPs alone (``reads_tokens`` False)
    decodes from the latent by itself."""
    model.eval()
    if model.config.reads_tokens:
        raise ValueError("lp_footprint_figure needs a model that decodes from its LPs alone (reads_tokens False), "
                         f"this one's decoder reads the patch tokens too: {model.config.decoder}")
    x = image[None]
    z = model.encode(x)
    m = z.shape[1]
    chosen = list(lps) if not isinstance(lps, int) else torch.linspace(0, m - 1, lps + 2)[1:-1].round().long().tolist()
    size = [scale * s for s in model.config.input_size]
    grid, cell = make_grid(size), 1 / torch.tensor(size, dtype=torch.float32)
    decode = lambda lat: model.decode(lat, grid, images=x, cell=cell)[0].T.reshape(-1, *size)  # noqa: E731
    full = decode(z)
    fig, axes = plt.subplots(1, 2 + len(chosen), figsize=(1.9 * (2 + len(chosen)), 2.3))
    _show(axes[0], image, "input")
    _show(axes[1], full, f"from {m} LPs, x{scale}")
    homes = model.lp_coords.cpu()
    for ax, i in zip(axes[2:], chosen):
        swapped = z.clone()
        swapped[:, i] = z[0].mean(0)
        change = (decode(swapped) - full).abs().mean(0).cpu()
        ax.imshow(change.numpy(), cmap="magma", extent=(0, 1, 1, 0))
        ax.plot(homes[i, 1], homes[i, 0], "c+", ms=10)
        ax.set_title(f"LP {i}: its footprint", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


@torch.no_grad()
def attention_figure(model, image, query=(0.5, 0.5)):
    """Attention of one query (y, x in [0, 1]) to the LPs, averaged over heads, drawn at the
    coordinate each LP stands for on top of the image (first cross-attention layer)."""
    model.eval()
    q = torch.tensor([query], dtype=torch.float32, device=image.device)
    _, w = model.decode(model.encode(image[None]), q, images=image[None], return_attention=True)  # (1, heads, 1, M)
    w = w[0, :, 0].mean(0).cpu()
    lpc = model.lp_coords.cpu()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image.cpu().permute(1, 2, 0).clamp(0, 1).numpy(), extent=(0, 1, 1, 0), alpha=0.6)
    sc = ax.scatter(lpc[:, 1], lpc[:, 0], c=w.numpy(), s=20 + 400 * w.numpy() / w.max().item(), cmap="magma")
    ax.plot(query[1], query[0], "c*", ms=14, label="query")
    fig.colorbar(sc, ax=ax, fraction=0.046, label="attention weight")
    ax.set(title="query -> LP attention", xlim=(0, 1), ylim=(1, 0))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def volume_figure(lr, renders, i=0, title=""):
    """Rows: the axial, coronal and sagittal middle slices of volume ``i``; columns: the input, then
    per size the baseline, the model and the truth (PSNR of the whole volume in the titles) and
    the absolute errors of baseline and model (x4, clipped). ``renders``: {size: (baseline,
    model, truth or None)} of volumes (B, C, D, H, W), as ``tasks.evaluate_sr`` returns them."""
    cols = [("input", lr[i], None)]
    for s, (b, m, gt) in renders.items():
        for name, v in (("trilinear", b), ("model", m)):
            db = f", {float(psnr(v[i:i + 1], gt[i:i + 1])):.1f} dB" if gt is not None else ""
            cols.append((f"{name} {s}^3{db}", v[i], None))
        if gt is not None:
            cols += [(f"truth {s}^3", gt[i], None), (f"|trilinear - truth| x4", b[i], gt[i]),
                     (f"|model - truth| x4", m[i], gt[i])]
    fig, axes = plt.subplots(3, len(cols), figsize=(1.7 * len(cols), 5.4), squeeze=False)
    for r, plane in enumerate(("axial", "coronal", "sagittal")):
        for ax, (name, v, ref) in zip(axes[r], cols):
            x = v if ref is None else ((v - ref).abs() * 4)
            k = 2 - r                                     # axial: across the last axis, then the others
            sl = x.select(1 + k, x.shape[1 + k] // 2)
            ax.imshow(sl[0].detach().float().cpu().clamp(0, 1).numpy(), cmap="gray" if ref is None else "magma",
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(name if r == 0 else "", fontsize=7)
            ax.set_ylabel(plane if ax is axes[r][0] else "", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def render_grid(model, image, scales=(1, 2, 4)):
    """The same latent of ``image`` (C, H, W) (encoded once) decoded at several multiples of its size."""
    z = model.encode(image[None])
    fig, axes = plt.subplots(1, len(scales), figsize=(2.6 * len(scales), 2.8))
    for ax, f in zip(axes, scales):
        size = tuple(round(f * n) for n in image.shape[1:])
        out = model.decode(z, make_grid(size, device=image.device), images=image[None],
                           cell=1 / torch.tensor(size, dtype=torch.float32))
        _show(ax, out[0].t().reshape(-1, *size), "x".join(map(str, size)))
    fig.tight_layout()
    return fig


def sparse_figure(images, truth, n=4, title="", errors=False):
    """Rows: images; columns: the observed pixels, linear interpolation, the model's estimate,
    two single samples, the means of the samples, the per-pixel spread over them, the truth.
    Titles give full-image PSNR. ``errors``: under each image's row, the absolute error of every
    prediction (x4, clipped), so where each method fails shows side by side."""
    means = sorted((k for k in images if k.startswith("mean_")), key=lambda k: int(k.split("_")[1]))
    cols = [("observed", "observed"), ("linear", "linear interp."), ("estimate", "model estimate"),
            ("sample", "one sample")] + [(k, f"mean of {k.split('_')[1]}") for k in means] + \
           [("std", "spread (std x4)")]
    cols = [(k, t) for k, t in cols if k in images]
    n = min(n, len(truth))
    per = 2 if errors else 1
    fig, axes = plt.subplots(n * per, len(cols) + 1, figsize=(1.6 * (len(cols) + 1), 1.75 * n * per), squeeze=False)
    for r in range(n):
        row = axes[r * per]
        for c, (key, name) in enumerate(cols):
            im = images[key][r] * (4 if key == "std" else 1)
            db = "" if key in ("observed", "std") else f"\n{float(psnr(images[key][r:r + 1], truth[r:r + 1])):.1f} dB"
            _show(row[c], im, name + db)
            if errors:
                err = ((images[key][r] - truth[r]).abs().mean(0, keepdim=True) * 4).clamp(0, 1).expand(3, -1, -1)
                if key in ("observed", "std"):
                    axes[r * per + 1, c].axis("off")
                else:
                    _show(axes[r * per + 1, c], err, f"|error| x4, {name}")
        _show(row[-1], truth[r], "ground truth")
        if errors:
            axes[r * per + 1, -1].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def zero_shot_figure(renders, n=2, title=""):
    """For each of ``n`` images, a row per size: linear interpolation upsampled bicubically, one
    sample, the mean of the samples, the real photograph; titles give PSNR against it."""
    sizes = sorted(renders)
    n = min(n, len(renders[sizes[0]][0]))
    names = ("linear + bicubic", "one sample", "mean of samples", "real photograph")
    fig, axes = plt.subplots(n * len(sizes), 4, figsize=(7.2, 1.9 * n * len(sizes)), squeeze=False)
    for i in range(n):
        for j, s in enumerate(sizes):
            row, gt = axes[i * len(sizes) + j], renders[s][3]
            for ax, name, im in zip(row, names, renders[s]):
                db = "" if im is gt else f", {float(psnr(im[i:i + 1], gt[i:i + 1])):.1f} dB"
                _show(ax, im[i], f"{name} {s}x{s}{db}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig

def recon_summary(results):
    """A table of a reconstruction / super-resolution evaluation (``evaluate_model``'s results)
    and sentences read from its numbers (images against bicubic, volumes against trilinear)."""
    t, S = results["test"], results["input_size"]
    sr = results.get("super_resolution", {})
    base = next((k for r in sr.values() for k in r if k != "model"), "bicubic")
    volume = base == "trilinear"
    shape = (lambda n: f"{n}^3") if volume else (lambda n: f"{n}x{n}")
    what = ("tiles", "volume") if volume else ("tiles", "photograph")
    lines = [f"| what | model | {base} | model - {base} |", "|---|---|---|---|",
             f"| reconstruction of {t['n']} held-out {shape(S)} {what[0]} | {t['psnr']:.2f} dB (SSIM {t.get('ssim', float('nan')):.3f}) | - | - |"]
    words = [f"Reconstruction of unseen tiles: {t['psnr']:.1f} dB."]
    for s, r in sr.items():
        m, b = r["model"], r[base]
        d = m["psnr"] - b["psnr"]
        x = int(s) // S
        lines.append(f"| render at {shape(s)} (x{x}) against the real {what[1]} | {m['psnr']:.2f} dB "
                     f"(SSIM {m['ssim']:.3f}) | {b['psnr']:.2f} dB (SSIM {b['ssim']:.3f}) | {d:+.2f} dB |")
        verdict = "above" if d > 0.05 else "below" if d < -0.05 else "level with"
        grid = (f" (error power at the patch period {m['grid']:.1f}x its surroundings, bicubic's {b['grid']:.1f}x: "
                f"{'excess error at the patch period' if m['grid'] > 2 * b['grid'] else 'no grid pattern'})"
                ) if "grid" in m else ""
        words.append(f"At x{x} the model is {abs(d):.2f} dB {verdict} {base}{grid}.")
    text = "\n".join(lines) + "\n\n" + " ".join(words)
    if "degradations" in results:
        text += ("\n\nThe same renders from inputs made another way (a camera's pixels are box averages): gain over "
                 "bicubic upsampling of the same input, the model's PSNR in brackets\n\n"
                 + degradation_table({"model": results["degradations"]}, S))
    return text


def degradation_table(by_model, input_size=32):
    """A markdown table of ``evaluate_degradations``' results of one or more models ({name: results}):
    a row per way the input was made, the gain over bicubic at each render size (the model's PSNR
    in brackets)."""
    sizes = list(next(iter(next(iter(by_model.values())).values())))
    head = " | ".join(f"{n} x{int(s) // input_size}" for n in by_model for s in sizes)
    lines = [f"| input made by | {head} |", "|---" * (1 + len(by_model) * len(sizes)) + "|"]
    for kind in next(iter(by_model.values())):
        cells = [f"{r[kind][s]['gain']:+.2f} ({r[kind][s]['model']:.2f})" for r in by_model.values() for s in sizes]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sparse_summary(results):
    """A table of a sparse-field evaluation (the flow task's results) and sentences read from it."""
    free, held = results["free"], results["hold_known"]
    lines = ["| method | known pixels | PSNR | PSNR unobserved | SSIM | TV / truth |", "|---|---|---|---|---|---|"]
    for mode, rows in (("free", free), ("held", held)):
        for name, r in rows.items():
            lines.append(f"| {name} | {mode} | {r['psnr']:.2f} | {r['psnr_unobserved']:.2f} | {r.get('ssim', float('nan')):.3f} "
                         f"| {r['tv_ratio']:.2f} |")
    lin = free["linear"]["psnr_unobserved"]
    means = sorted((k for k in free if k.startswith("mean_") and k.count("_") == 1), key=lambda k: int(k[5:]))
    best = means[-1] if means else "sample"
    d, d1 = free[best]["psnr_unobserved"] - lin, free["sample"]["psnr_unobserved"] - lin
    tv = free["sample"]["tv_ratio"]
    words = [f"On the unobserved pixels the {best.replace('_', ' of ')} samples is {abs(d):.2f} dB "
             f"{'above' if d > 0 else 'below'} linear interpolation, one sample {abs(d1):.2f} dB "
             f"{'above' if d1 > 0 else 'below'} it."]
    if f"{best}_independent" in free:
        di = free[f"{best}_independent"]["psnr_unobserved"] - lin
        words.append(f"(The samples are drawn in antithetic pairs; the {best.replace('_', ' of ')} independent "
                     f"draws is {abs(di):.2f} dB {'above' if di > 0 else 'below'} linear.)")
    texture = "speckled" if tv > 1.25 else "smoother than the truth" if tv < 0.8 else "about as textured as the truth"
    words.append(f"One sample's total variation is {tv:.2f}x the truth's ({texture}).")
    for s, r in results.get("zero_shot", {}).items():
        mk = next(k for k in r if k.startswith("mean_"))
        dz = r[mk]["psnr"] - r["linear+bicubic"]["psnr"]
        words.append(f"Zero-shot {s}x{s}: {abs(dz):.2f} dB {'above' if dz > 0 else 'below'} linear + bicubic.")
    return "\n".join(lines) + "\n\n" + " ".join(words)
