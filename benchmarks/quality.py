"""Quality of the three notebook models and their transformer baselines, on the embedded photos.

    python benchmarks/quality.py                    # cpu profile, all three configs
    python benchmarks/quality.py --configs scent --profile smoke

For each config, the BiMamba model (checkpoints/<config>, the folder notebook N writes) and a
transformer encoder of the same width and depth with the same decoder and the same training budget
(checkpoints/<config>-transformer). A finished run whose stored training config matches is reused,
a partial one is resumed, otherwise it is trained. Each best.pt is then evaluated on the test
photographs: reconstruction at 32x32 (PSNR, SSIM) and super-resolution x2, x4 against the real HR
crops, bicubic beside it. Prints the table and the quality targets (met or not) and writes
benchmarks/results/quality.md and quality.json.
"""
import argparse
import json
import sys

from _util import RESULTS, write_results

from ginr_common.configs import get_config, run_name
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.train import CHECKPOINTS, fit

CONFIGS = ["standard_fourier", "gaussian_fourier", "scent"]


def run(name, profile, mixer):
    cfg = get_config(name, profile)
    cfg.model.mixer = mixer
    out = CHECKPOINTS / run_name(cfg, "photos")
    metrics = fit(cfg, "photos", out=out, resume=True)
    ev, _ = evaluate_checkpoint(out / "best.pt", "photos", sizes=(64, 128), progress=False)
    sr = ev["super_resolution"]
    return {"config": name, "encoder": mixer, "checkpoint": str(out / "best.pt"), "steps": metrics["steps"],
            "train_seconds": metrics["train_seconds"], "best_val_psnr": metrics["best_val_psnr"],
            "test_psnr": ev["test"]["psnr"], "test_ssim": ev["test"]["ssim"],
            **{f"x{int(s) // 32}_{k}": sr[s][k]["psnr"] for s in sr for k in ("model", "bicubic")}}


def goals(rows):
    r = {(x["config"], x["encoder"]): x for x in rows}
    out = []
    if ("standard_fourier", "bimamba") in r:
        v = r["standard_fourier", "bimamba"]["test_psnr"]
        out.append(f"notebook 1 reconstruction >= 32 dB: {v:.2f} dB -> {'met' if v >= 32 else 'NOT met'}")
    if ("gaussian_fourier", "bimamba") in r:
        x = r["gaussian_fourier", "bimamba"]
        for s in (2, 4):
            d = x[f"x{s}_model"] - x[f"x{s}_bicubic"]
            out.append(f"notebook 2 x{s} >= bicubic + 1 dB: {x[f'x{s}_model']:.2f} vs bicubic "
                       f"{x[f'x{s}_bicubic']:.2f} ({d:+.2f} dB) -> {'met' if d >= 1 else 'NOT met'}")
    if ("scent", "bimamba") in r and ("standard_fourier", "bimamba") in r:
        a, b = r["scent", "bimamba"]["test_psnr"], r["standard_fourier", "bimamba"]["test_psnr"]
        out.append(f"notebook 3 reconstruction >= notebook 1's at the same budget: {a:.2f} vs {b:.2f} dB -> "
                   f"{'met' if a >= b else 'NOT met'}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--out", default=str(RESULTS / "quality"))
    a = p.parse_args(argv)
    rows = [run(name, a.profile, mixer) for name in a.configs for mixer in ("bimamba", "transformer")]
    lines = [f"profile {a.profile}, embedded photos; test = astronaut + stereo motorcycle "
             "(held-out photographs); PSNR in dB, mean per image. SR: 32x32 input (antialiased downsample of "
             "the HR crop) -> x2 (64) and x4 (128) against the real HR crop.", "",
             "| config | encoder | train (s) | val PSNR | test PSNR 32x32 | SSIM | x2 model | x2 bicubic | "
             "x4 model | x4 bicubic |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['encoder']} | {r['train_seconds']:.0f} | {r['best_val_psnr']:.2f} | "
              f"{r['test_psnr']:.2f} | {r['test_ssim']:.3f} | {r['x2_model']:.2f} | {r['x2_bicubic']:.2f} | "
              f"{r['x4_model']:.2f} | {r['x4_bicubic']:.2f} |" for r in rows]
    g = goals(rows)
    lines += ["", *[f"- {x}" for x in g]]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "quality.py", argv or sys.argv[1:], text, {"rows": rows, "goals": g})
    print(json.dumps(g, indent=1))
    return rows


if __name__ == "__main__":
    main()
