"""DVC stage ``rehearsal_assets`` (studies/paper_sim): the paper profile's local downloads,
as small random stand-ins in the released layouts (``pointvl.rehearsal``).

    python -m pointvl.stages.rehearsal_assets --params studies/paper_sim/params.yaml
        [--per-category 3] [--seed 0]

Writes a ShapeNetCore v2 tree at ``build_dataset.shapenet_root``, a Qwen2.5-VL folder at
``model.backbone`` and a Point-BERT checkpoint at ``model.point_bert_checkpoint``: exactly
where the paper profile reads its real ones. Refuses every profile but ``paper_sim``.
"""

from __future__ import annotations

from pointvl.config import SchemaConfig
from pointvl.data.build import BuildDatasetConfig
from pointvl.model import ModelConfig
from pointvl.rehearsal import write_assets
from pointvl.stages._cli import Flag, Stage

STAGE = Stage(
    "rehearsal_assets",
    __doc__,
    sections={"model": ModelConfig, "build_dataset": BuildDatasetConfig, "schema": SchemaConfig},
    flags=[
        Flag("--per-category", type=int, default=3, help="meshes per category (default 3)"),
        Flag("--seed", type=int, default=0, help="seeds meshes, weights and tokenizer"),
    ],
    run=lambda ctx: write_assets(
        ctx.profile,
        ctx.model,
        ctx.build_dataset,
        ctx.schema.quant_bins,
        ctx.args.per_category,
        ctx.args.seed,
    ),  # fmt: skip
)
main = STAGE.main

if __name__ == "__main__":
    main()
