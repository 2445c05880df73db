"""Decoding at any resolution from one latent: time and peak memory of rendering S x S pixels.

    python benchmarks/decode.py                    # the cpu profile's model, S = 128 ... 1024
    python benchmarks/decode.py --profile full     # the full profile's (wider) decoder

The image is encoded once; ``model.decode`` then evaluates S*S pixel-centre queries in chunks of
``config.query_chunk`` under torch.no_grad. Time must be linear in pixels (time per megapixel
roughly constant) and the 1024 x 1024 render's peak memory (rise of the resident set) under 2 GB.
Weights are the seeded initialisation: time and memory do not depend on their values.
Writes benchmarks/results/decode.md and decode.json.
"""
import argparse
import sys

import torch
from _util import RESULTS, measure, track_live_memory, write_results

from ginr_common.fourier import make_grid
from ginr_common.model import MambaGINR
from ginr_common.configs import get_config


def main(argv=None):
    if argv is None:
        track_live_memory()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="standard_fourier")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--mem-limit-gb", type=float, default=2.0)
    p.add_argument("--out", default=str(RESULTS / "decode"))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = get_config(a.config, a.profile).model
    model = MambaGINR(cfg).eval()
    image = torch.rand(1, cfg.in_channels, *cfg.input_size)
    with torch.no_grad():
        latents = model.encode(image)
    rows = []
    for s in a.sizes:
        coords = make_grid((s, s))

        def render():
            with torch.no_grad():
                out = model.decode(latents, coords, images=image, cell=1 / torch.tensor((s, s), dtype=torch.float32))
            assert out.shape == (1, s * s, cfg.in_channels)

        t, m = measure(render, a.repeats if s <= 512 else 1)
        rows.append({"size": s, "pixels": s * s, "seconds": t, "peak_mb": m / 2**20, "s_per_megapixel": t / (s * s) * 2**20})
        print(f"{s}x{s}: {t:.2f} s, peak {m / 2**20:.0f} MB", flush=True)

    lines = [f"config {a.config}, profile {a.profile} (decoder {cfg.decoder}, query chunk "
             f"{cfg.query_chunk}), one latent, float32, no_grad.", "",
             "| size | pixels | time (s) | s per megapixel | peak memory (MB) |", "|---|---|---|---|---|"]
    lines += [f"| {r['size']}x{r['size']} | {r['pixels']} | {r['seconds']:.3f} | {r['s_per_megapixel']:.3f} | "
              f"{r['peak_mb']:.0f} |" for r in rows]
    per_mp = [r["s_per_megapixel"] for r in rows]
    big = rows[-1]
    summary = {"time_per_pixel_max_over_min": max(per_mp) / min(per_mp), "largest": big["size"],
               "largest_peak_mb": big["peak_mb"], "under_limit": big["peak_mb"] < a.mem_limit_gb * 1024}
    lines += ["", f"time per pixel varies {summary['time_per_pixel_max_over_min']:.2f}x across sizes (linear "
              f"in pixels when close to 1); {big['size']}x{big['size']} peak memory {big['peak_mb']:.0f} MB "
              f"({'under' if summary['under_limit'] else 'OVER'} the {a.mem_limit_gb:g} GB limit)."]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "decode.py", argv or sys.argv[1:], text, {"rows": rows, **summary, "args": vars(a)})
    return rows, summary


if __name__ == "__main__":
    main()
