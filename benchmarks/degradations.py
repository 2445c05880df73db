"""Super-resolution by how the input was made: each shipped image model's renders of the held-out HR
test crops at x2 and x4, from inputs made by each of ``ginr_common.degradations.EVALUATED``
(antialiased bicubic, as the models were trained; bilinear; box averaging, as a camera's pixels are;
box after a blur; box with noise), against bicubic upsampling of the same inputs.

    python benchmarks/degradations.py                              # the shipped standard_fourier, gaussian_fourier, scent
    python benchmarks/degradations.py --names gaussian_fourier

Writes benchmarks/results/degradations.md and .json.
"""
import argparse
import sys

from _util import RESULTS, write_results

from ginr_common.checkpoints import load_pretrained
from ginr_common.evaluate import evaluate_model
from ginr_common.viz import degradation_table

IMAGE_MODELS = ("standard_fourier", "gaussian_fourier", "scent")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", nargs="+", default=list(IMAGE_MODELS), choices=IMAGE_MODELS)
    p.add_argument("--out", default=str(RESULTS / "degradations"))
    a = p.parse_args(argv)
    rows = {}
    for name in a.names:
        results, _ = evaluate_model(load_pretrained(name), name, progress=False, degradations=True)
        rows[name] = results["degradations"]
        print(name, {k: {s: round(v["gain"], 2) for s, v in r.items()} for k, r in rows[name].items()}, flush=True)
    text = ("Gain over bicubic upsampling of the same input (dB; model PSNR in brackets), shipped weights, "
            "the HR test crops of the embedded photo set (128x128 from 32x32 inputs). Rows: how the 32x32 input "
            "was made from the 128x128 crop.\n\n" + degradation_table(rows))
    print("\n" + text)
    write_results(a.out, "degradations.py", argv if argv is not None else sys.argv[1:], text, rows)
    return rows


if __name__ == "__main__":
    main()
