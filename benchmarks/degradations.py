"""Super-resolution by how the input was made: each shipped image model's renders of the held-out HR
test crops at x2 and x4, from inputs made by each of ``ginr_common.degradations.EVALUATED``
(antialiased bicubic, as the models were trained; bilinear; box averaging, as a camera's pixels are;
box after a blur; box with noise), against bicubic upsampling of the same inputs.

    python benchmarks/degradations.py                              # the shipped standard_fourier, gaussian_fourier, scent
    python benchmarks/degradations.py --names gaussian_fourier
    python benchmarks/degradations.py --checkpoints checkpoints/RUN_SEED0/best.pt checkpoints/RUN_SEED1/best.pt

With --checkpoints: trained runs instead of the shipped weights, and their mean (e.g. two seeds).
Writes benchmarks/results/degradations.md and .json.
"""
import argparse
import sys
from pathlib import Path

from _util import RESULTS, write_results

from ginr_common.checkpoints import load_checkpoint, load_pretrained
from ginr_common.configs import train_config_from_checkpoint
from ginr_common.evaluate import evaluate_model
from ginr_common.viz import degradation_table

IMAGE_MODELS = ("standard_fourier", "gaussian_fourier", "scent")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", nargs="+", default=list(IMAGE_MODELS), choices=IMAGE_MODELS)
    p.add_argument("--checkpoints", nargs="+", default=None, help="evaluate these runs' checkpoints instead")
    p.add_argument("--out", default=str(RESULTS / "degradations"))
    a = p.parse_args(argv)
    rows = {}
    models = ({f"{Path(c).parent.name} step {ck['train_state'].get('step')}": (m, train_config_from_checkpoint(ck))
               for c in a.checkpoints for m, ck in [load_checkpoint(c)]} if a.checkpoints else
              {name: (load_pretrained(name), name) for name in a.names})
    for label, (model, config) in models.items():
        results, _ = evaluate_model(model, config, progress=False, degradations=True)
        rows[label] = results["degradations"]
        print(label, {k: {s: round(v["gain"], 2) for s, v in r.items()} for k, r in rows[label].items()}, flush=True)
    if a.checkpoints and len(rows) > 1:
        runs = list(rows.values())
        rows[f"mean of {len(runs)}"] = {k: {s: {v: sum(r[k][s][v] for r in runs) / len(runs) for v in runs[0][k][s]}
                                            for s in runs[0][k]} for k in runs[0]}
    what = "the runs named" if a.checkpoints else "shipped weights"
    text = (f"Gain over bicubic upsampling of the same input (dB; model PSNR in brackets), {what}, "
            "the HR test crops of the embedded photo set (128x128 from 32x32 inputs). Rows: how the 32x32 input "
            "was made from the 128x128 crop.\n\n" + degradation_table(rows))
    print("\n" + text)
    write_results(a.out, "degradations.py", argv if argv is not None else sys.argv[1:], text, rows)
    return rows


if __name__ == "__main__":
    main()
