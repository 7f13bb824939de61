"""The ``captum-ext`` command.

* ``captum-ext demo``: every CAM on the pretrained EfficientNet-Lite0 over the bundled photos;
  writes a PNG grid of the maps and a table of per-method time.
* ``captum-ext explain IMAGE... --method M [--target T] [--model FILE --layer NAME] --out DIR``:
  a user's own images; writes an overlay per image and a JSON file of the raw maps' statistics.
* ``captum-ext methods``: the catalogue, with each method's paper, cost and supported data.

Exit codes: 0 on success, 1 when the work fails (a message says why), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

__all__ = ["main"]

logger = logging.getLogger("captum_ext.cli")


def _demo(args: argparse.Namespace) -> int:
    from captum_ext.demo import run_demo
    from captum_ext.registry import get_method

    methods = [get_method(m).name for m in args.methods] if args.methods else None
    result = run_demo(
        args.out,
        photos=args.photos,
        methods=methods,
        show_progress=not args.quiet,
        expensive_photos=None if args.all_photos else 1,
    )
    print(result.table_path.read_text())
    print(f"grid:  {result.grid_path}")
    print(f"table: {result.table_path}")
    print(f"json:  {result.json_path}")
    return 0


def _load_image(path: str) -> "torch.Tensor":
    import numpy as np
    import torch
    from matplotlib.image import imread

    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path!r} does not exist.")
    try:
        array = np.asarray(imread(path))
    except Exception as error:  # matplotlib/Pillow raise many types for a bad file
        raise ValueError(f"cannot read {path!r} as an image ({error}).") from error
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"{path!r} is not an RGB image (array shape {array.shape}).")
    image = torch.from_numpy(np.array(array[..., :3], dtype=np.float32))
    if array.dtype == np.uint8:
        image = image / 255.0
    return image.permute(2, 0, 1).contiguous()


def _explain(args: argparse.Namespace) -> int:
    import json

    import torch
    from tqdm.auto import tqdm

    from captum_ext._validation import resolve_layer
    from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet
    from captum_ext.models.loading import load_model_file, supports_hooks
    from captum_ext.registry import get_method
    from captum_ext.visualization import overlay_heatmap

    info = get_method(args.method)
    images = {path: _load_image(path) for path in args.images}
    if args.model == "efficientnet-lite0":
        model = load_efficientnet_lite0()
        layer_name, to_input = args.layer or "_avg_pooling", args.layer is None or args.layer_input
        head = model._fc
    else:
        model = load_model_file(args.model)
        if not supports_hooks(model):
            raise ValueError(
                f"{args.model} is a TorchScript model; TorchScript does not run the Python hooks "
                "that layer methods need. Export it with torch.export.save instead."
            )
        if not args.layer:
            raise ValueError("a user model needs --layer NAME (see the model's named_modules()).")
        layer_name, to_input, head = args.layer, args.layer_input, None
    layer = resolve_layer(model, layer_name)
    if head is None and info.name == "LayerClassActivationMap":
        raise ValueError("CAM needs the classifier head; use another method for a user model.")
    method = info.build(model, layer, head)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"method": info.name, "model": args.model, "layer": layer_name,
              "attribute_to_layer_input": bool(to_input), "images": {}}
    for path, image in tqdm(images.items(), desc="explain", disable=args.quiet):
        x = preprocess_imagenet(image, size=args.size) if args.normalize == "imagenet" else (
            torch.nn.functional.interpolate(image[None], size=(args.size, args.size),
                                            mode="bilinear", antialias=True))
        with torch.no_grad():
            scores = model(x)
        target = int(scores.argmax(1)) if args.target is None else args.target
        cam = info.run(method, x, target, attribute_to_layer_input=to_input)
        if cam.dim() == x.dim() and cam.shape[1] > 1:  # input-space relevance: sum channels
            cam = cam.sum(1, keepdim=True)
        stem = Path(path).stem
        display = torch.nn.functional.interpolate(
            image[None], size=(args.size, args.size), mode="bilinear", antialias=True
        )[0].clamp(0, 1)
        figure = overlay_heatmap(display, cam[0], title=f"{stem}: {info.name}, target {target}")
        figure.savefig(out / f"{stem}_{info.name}.png", dpi=100)
        flat = cam.flatten()
        peak = [int(i) for i in torch.unravel_index(flat.argmax(), cam.shape[2:])]
        report["images"][path] = {
            "target": target,
            "score": float(scores[0, target]),
            "shape": list(cam.shape),
            "min": float(flat.min()), "max": float(flat.max()), "mean": float(flat.mean()),
            "positive_fraction": float((flat > 0).float().mean()),
            "peak_position": peak,
            "overlay": str(out / f"{stem}_{info.name}.png"),
        }
    (out / "explanations.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {len(images)} overlay(s) and {out / 'explanations.json'}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from captum_ext.registry import METHODS

    rows = [("method", "kind", "paper", "cost", "data")]
    for info in METHODS.values():
        kind = info.kind + (" (Captum built-in)" if info.is_captum_builtin else "")
        rows.append((info.name, kind, info.paper, info.cost, info.ranks))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-ext", description="Published explanation methods as Captum attributions."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run every CAM on EfficientNet-Lite0 over the bundled photos"
    )
    demo.add_argument("--out", default="captum-ext-out", help="output folder (default: %(default)s)")
    demo.add_argument("--photos", nargs="+", help="photo names (default: all bundled photos)")
    demo.add_argument("--methods", nargs="+", help="method names (default: all CAMs)")
    demo.add_argument(
        "--all-photos", action="store_true",
        help="run the one-pass-per-channel CAMs (Score-CAM, Ablation-CAM) on every photo, not just the first",
    )
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    explain = commands.add_parser("explain", help="explain your own images")
    explain.add_argument("images", nargs="+", help="image files (PNG or JPEG)")
    explain.add_argument("--method", default="LayerGradCamPlusPlus", help="see `captum-ext methods`")
    explain.add_argument("--target", type=int, help="class index (default: the top-1 class)")
    explain.add_argument(
        "--model", default="efficientnet-lite0",
        help="'efficientnet-lite0' (built in) or a torch.export / TorchScript file; pickles are refused",
    )
    explain.add_argument("--layer", help="layer name in the model (default for the built-in model: "
                         "the input of _avg_pooling)")
    explain.add_argument("--layer-input", action="store_true", help="explain the layer's input")
    explain.add_argument("--size", type=int, default=224, help="input size (default: %(default)s)")
    explain.add_argument("--normalize", choices=["imagenet", "none"], default="imagenet")
    explain.add_argument("--out", default="captum-ext-out", help="output folder")
    explain.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(run=_explain)

    methods = commands.add_parser("methods", help="list the methods")
    methods.set_defaults(run=_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"captum-ext: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
