"""``atrous models``: the model zoo with parameter counts."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models with their parameter counts")
    p.add_argument("--num-classes", type=int, default=21, help="classes of the head (default 21)")
    p.add_argument("--aux", action="store_true", help="count the auxiliary head too")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from atrous.models import MODELS, build, count_parameters

    rows = []
    for name, spec in MODELS.items():
        with torch.device("meta"):  # shapes only: counting needs no memory or init time
            model = build(name, args.num_classes, aux=args.aux and spec.head != "largefov")
        rows.append(
            {
                "name": name,
                "version": spec.version,
                "backbone": spec.backbone,
                "head": spec.head,
                "output_stride": spec.output_stride,
                "atrous_rates": model.config["atrous_rates"],
                "params_m": round(count_parameters(model) / 1e6, 2),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':34} {'ver':4} {'backbone':18} {'head':9} {'OS':>3} {'rates':14} {'params':>8}")
    for r in rows:
        rates = ",".join(map(str, r["atrous_rates"]))
        print(
            f"{r['name']:34} {r['version']:4} {r['backbone']:18} {r['head']:9} "
            f"{r['output_stride']:>3} {rates:14} {r['params_m']:>7.2f}M"
        )
    return 0
