"""What the spatial transformer of trained ``stn-vgg`` models does: the affine maps it predicts.

Usage::

    python benchmarks/stn_warp.py RUN/best.keras [RUN2/best.keras ...] --data FILE [--split test] [--count 3000]

For each model, over the first ``--count`` images of the split: the mean and the standard
deviation of each of the six numbers of the map ``[[a, b, tx], [c, d, ty]]`` (output to input
coordinates in ``[-1, 1]``, :func:`gtsrb_kit.models.spatial_transform`), the side scale
``sqrt(|det|)`` (below 1: the classifier sees a zoomed-in view) and the shift. A largest standard
deviation near 0 means one fixed warp for every image, not a per-image alignment; so does a
localization net none of whose features (the inputs of the map's layer) vary over the images.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="best.keras files of stn-vgg runs")
    parser.add_argument("--data", required=True, help="a cooked file with the models' preprocessing")
    parser.add_argument("--split", default="test")
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()

    import keras

    from gtsrb_kit.evaluate import load_model
    from gtsrb_kit.models import THETA_LAYER
    from gtsrb_kit.store import load_split

    x, _ = load_split(args.data, args.split)
    x = x[: args.count].astype(np.float32) / 255.0
    print(f"{len(x)} {args.split} images of {args.data}")
    for path in args.models:
        model = load_model(path)
        layer = model.get_layer(THETA_LAYER)
        features, theta = keras.Model(model.input, [layer.input, layer.output]).predict(x, batch_size=500, verbose=0)
        varying = int((features.std(0) > 1e-6).sum())
        scale = np.sqrt(np.abs(np.linalg.det(theta[:, [0, 1, 3, 4]].reshape(-1, 2, 2))))
        mean, std = " ".join(f"{v:.3f}" for v in theta.mean(0)), " ".join(f"{v:.1e}" for v in theta.std(0))
        print(f"{path}: mean theta [{mean}], std [{std}] (largest {theta.std(0).max():.1e}); "
              f"side scale {scale.mean():.3f}, shift {np.hypot(theta[:, 2], theta[:, 5]).mean():.3f}; "
              f"localization features varying over the images: {varying} of {features.shape[1]}")


if __name__ == "__main__":
    main()
