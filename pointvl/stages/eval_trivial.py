"""DVC stage ``eval_trivial``: the trivial 3D predictors every 3D table shows (Sec. 4.3).

    python -m pointvl.stages.eval_trivial --params params.yaml [--profile smoke]

Training-mean box, centroid + mean size, the cloud's own AABB, keypoints at the box centre,
the cloud's AABB with FPS keypoints (``pointvl.eval.trivial``), written as completion texts and
scored by the same parser and metrics as the models, with 95% bootstrap CIs over the test
samples. Only ``trivial.REPORTED_METRICS`` are kept (their 2D and text fields are copied from
the ground truth, so other metrics would mean nothing). ``probes`` (``trivial.probes``): the
same predictors without quantization on the test split's own columns (and, for a ``view``
dataset, the object-frame AABB and the occluded keypoints).
"""

from __future__ import annotations

from pointvl.eval.trivial import EvalTrivialConfig, evaluate_trivial
from pointvl.stages._cli import Stage

STAGE = Stage(
    "eval_trivial",
    __doc__,
    sections={"eval_trivial": EvalTrivialConfig},
    run=lambda ctx: evaluate_trivial(ctx.eval_trivial, ctx.profile),
    show=lambda out: {k: {m: round(v["mean"], 3) for m, v in r.items()} for k, r in out.items()},
)
main = STAGE.main

if __name__ == "__main__":
    main()
