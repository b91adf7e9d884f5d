"""Stand-ins for what the ``paper`` profile reads from disk, for the ``paper_sim`` rehearsal.

The paper profile starts from three local downloads; the rehearsal writes small random ones
*in the released layouts*, so that every reader of the paper code path runs unchanged:

    what the paper reads               written here (rehearsal_assets stage)       read by
    ShapeNetCore v2 (build_dataset.    taxonomy.json + <synset>/<model>/models/     data.shapenet
      shapenet_root)                     model_normalized.obj of procedural meshes
                                         (pointvl.data.shapes), ShapeNet's synset ids
    Qwen2.5-VL-3B-Instruct folder      config.json (qwen2_5_vl) + model.safetensors  build_policy,
      (model.backbone)                   of a small random Qwen2.5-VL (the model       train_tokenizer
                                         section's lm_* / vision_* sizes, tied
                                         embeddings as the 3B) + a Qwen-style tokenizer
                                         (every digit a token; Qwen's special tokens,
                                         no <|point_pad|>: train_tokenizer adds it)
    Point-BERT.pth                     {"base_model": {"module.<key>": tensor}} of a  load_point_bert_
      (model.point_bert_checkpoint)      random Point-BERT of the model section's size  state_dict

Everything is seeded: the same seed writes the same files. ``write_assets`` refuses any
profile but ``paper_sim``, so it can never write over a real download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from pointvl.config import ConfigError

SIM_PROFILE = "paper_sim"
SIM_DEPARTURES = {
    "launch.accelerate_config": "2 CPU processes (cpu_zero3.yaml), not 4 GPUs",
    "sft.bf16": "CPU: fp32", "rl.bf16": "CPU: fp32",
    "model.backbone": "the stand-in Qwen2.5-VL folder",
    "train_tokenizer.backbone": "the stand-in's tokenizer",
    "model.point_bert_checkpoint": "the stand-in Point-BERT checkpoint",
    "build_dataset.shapenet_root": "the stand-in ShapeNet tree",
    "model.point_encoder_widths": "Point-BERT narrower", "model.point_hidden_size": "narrower",
    "model.point_layers": "shallower",
    "build_dataset.train_count": "20 objects", "build_dataset.test_count": "6 objects",
    "build_dataset.workers": "2 cores", "sft.num_workers": "2 cores",
    "sft.max_steps": "a few steps", "rl.max_steps": "a few steps",
    "sft.save_steps": "a checkpoint within the few steps", "rl.save_steps": "idem",
    "sft.logging_steps": "a record per step",
    "rl.val_prompts": "a small validation", "rl.val_every": "idem", "rl.val_generations": "idem",
    "eval_trivial.n_boot": "fewer resamples", "evaluate.n_boot": "idem", "report.n_boot": "idem",
    "figures.html_samples": "fewer test objects", "notebooks.fast": "fast notebooks",
}  # fmt: skip
"""Every value in which ``paper_sim`` departs from ``paper`` (params.yaml's "sim:" comments;
tests/test_paper_sim.py checks there is no other), and why. The LM and vision tower sizes
depart too, through the stand-in backbone's config (``model.lm_*`` / ``vision_*``)."""
SYNSETS = {
    "airplane": "02691156", "bed": "02818832", "bench": "02828884", "bookshelf": "02871439",
    "bottle": "02876657", "bowl": "02880940", "cabinet": "02933112", "car": "02958343",
    "chair": "03001627", "lamp": "03636649", "monitor": "03211117", "mug": "03797390",
    "sofa": "04256520", "table": "04379243",
}  # fmt: skip
"""ShapeNetCore v2 synset id of each procedural category (``monitor`` is ShapeNet's display)."""


def write_shapenet_tree(root: str | os.PathLike, per_category: int, seed: int = 0) -> int:
    """``per_category`` procedural meshes of every category as a ShapeNetCore v2 tree, written
    whole or not at all; -> the number of meshes."""
    from pointvl.io import atomic_dir

    with atomic_dir(root) as tmp:
        return _write_tree(Path(tmp), per_category, seed)


def _write_tree(root: Path, per_category: int, seed: int) -> int:
    from pointvl.data.shapes import CATEGORIES, make_shape

    taxonomy = [{"synsetId": SYNSETS[c], "name": c, "children": [], "numInstances": per_category}
                for c in CATEGORIES]  # fmt: skip
    (root / "taxonomy.json").write_text(json.dumps(taxonomy, indent=1) + "\n")
    n = 0
    for k, category in enumerate(CATEGORIES):
        for i in range(per_category):
            mesh = make_shape(category, np.random.default_rng([seed, k, i]))
            obj = root / SYNSETS[category] / f"sim{i:04d}" / "models" / "model_normalized.obj"
            obj.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
            lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.triangles]
            obj.write_text("\n".join(lines) + "\n")
            n += 1
    return n


def backbone_tokenizer(quant_bins: int, image_size: int, vocab_size: int = 2048, seed: int = 0):
    """The Qwen-style tokenizer of the stand-in backbone, trained on written targets (as a web
    tokenizer, it has never seen our dataset) and common words."""
    from pointvl.demo import demo_target
    from pointvl.model.tokenizer import train_qwen_style_tokenizer
    from pointvl.schema import format_target

    texts = [format_target(demo_target(seed + i, image_size), quant_bins) for i in range(200)]
    texts += ["What is the object? Locate it in 2D and 3D: boxes and keypoints."] * 4
    return train_qwen_style_tokenizer(texts, vocab_size=vocab_size)


def write_backbone(path: str | os.PathLike, model_cfg, tokenizer, seed: int = 0) -> int:
    """A random ``Qwen2_5_VLForConditionalGeneration`` + tokenizer saved as a hub folder; -> params."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from pointvl.io import atomic_dir
    from pointvl.model.config import small_backbone_fields

    ids = qwen_token_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        **small_backbone_fields(ids, len(tokenizer), model_cfg, tie_word_embeddings=True)
    )
    config.vision_config.window_size = 112  # Qwen2.5-VL's own value (tiny: 56)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return sum(p.numel() for p in model.parameters())


def qwen_token_ids(tokenizer) -> dict[str, int]:
    """The backbone config's token ids from a Qwen-layout tokenizer (``special_token_ids``
    without ``<|point_pad|>``, which the backbone does not have)."""
    vocab = tokenizer.get_vocab()
    tid = vocab.__getitem__
    pad = tid("<|endoftext|>")
    return {
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": tid("<|video_pad|>"),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
        "bos_token_id": pad,
        "eos_token_id": tid("<|im_end|>"),
        "pad_token_id": pad,
    }


def write_point_bert(path: str | os.PathLike, model_cfg, seed: int = 0) -> int:
    """A random Point-BERT of ``model_cfg``'s size in the released checkpoint layout; -> params."""
    from pointvl.model.point_bert import PointBertEncoder

    torch.manual_seed(seed)
    encoder = PointBertEncoder(model_cfg.point_config())
    from pointvl.io import atomic_torch_save

    state = {f"module.{k}": v for k, v in encoder.state_dict().items()}
    atomic_torch_save({"base_model": state}, path)
    return sum(p.numel() for p in encoder.parameters())


def write_assets(profile: str, model_cfg, build_cfg, quant_bins: int, per_category: int,
                 seed: int = 0) -> dict:  # fmt: skip
    """All three stand-ins, where ``model_cfg`` / ``build_cfg`` say the paper reads them."""
    if profile != SIM_PROFILE:
        raise ConfigError(
            f"rehearsal_assets: profile {profile!r}; only {SIM_PROFILE!r} may write stand-in "
            "weights and meshes (the paper profile reads real downloads at these paths)"
        )
    tok = backbone_tokenizer(quant_bins, build_cfg.image_size, seed=seed)
    return {
        "shapenet_root": build_cfg.shapenet_root,
        "meshes": write_shapenet_tree(build_cfg.shapenet_root, per_category, seed),
        "backbone": model_cfg.backbone,
        "backbone_params": write_backbone(model_cfg.backbone, model_cfg, tok, seed),
        "vocab_size": len(tok),
        "point_bert_checkpoint": model_cfg.point_bert_checkpoint,
        "point_bert_params": write_point_bert(model_cfg.point_bert_checkpoint, model_cfg, seed),
    }


# ----------------------------------------------------------------------------- the pipeline
PIPELINE = Path(__file__).resolve().parent.parent / "studies/paper_sim/dvc.yaml"
PIPELINE_STAGES = ("build_dataset", "train_tokenizer", "eval_trivial", "sft", "rl", "evaluate",
                   "zeroshot", "figures", "report", "notebook_code", "notebooks")  # fmt: skip
"""The stages of ../dvc.yaml the rehearsal runs (not: credit_demo, credit_lab, baseline)."""
ASSETS = ("data/${profile}_shapenet", "models/${profile}/backbone",
          "models/${profile}/point_bert.pth")  # fmt: skip
STUDY_PARAMS = {"studies/paper_sim/params.yaml": ["profile", "active"]}
"""Tracked instead of the repository's ``profile``: the rehearsal's own profile and folders."""
EXTRA_DEPS = {"build_dataset": ASSETS[:1], "train_tokenizer": ASSETS[1:2], "sft": ASSETS[1:]}
HEADER = """\
# GENERATED by `python -m pointvl.rehearsal --write` from ../../dvc.yaml: edit that file (or
# pointvl/rehearsal.py), then regenerate; tests/test_paper_sim.py checks they agree.
# The paper_sim rehearsal (issue 12): `dvc repro studies/paper_sim/dvc.yaml` (make rehearsal).
# The paper profile's stages, run from the repository root with the paper_sim profile
# (./params.yaml): stand-in downloads (rehearsal_assets), dataset, tokenizer, SFT and every RL
# arm through `accelerate launch` (2 CPU processes, DeepSpeed ZeRO-3), evaluation, figures,
# report and notebooks; every output under data/, models/, checkpoints/ paper_sim or
# results/paper_sim/.
"""


def _assets_stage() -> dict:
    sections = ("model", "build_dataset", "schema")
    return {
        "wdir": "../..",
        "cmd": "python -m pointvl.stages.rehearsal_assets --params studies/paper_sim/params.yaml",
        "deps": [
            "pointvl/stages/rehearsal_assets.py",
            "pointvl/rehearsal.py",
            "pointvl/data/shapes.py",
            "pointvl/model/tokenizer.py",
            "pointvl/model/config.py",
            "pointvl/model/point_bert.py",
        ],  # fmt: skip
        "params": [
            STUDY_PARAMS,
            *sections,
            *(f"overrides.${{profile}}.{s}" for s in sections),
            *(f"shared.{k}.${{profile}}" for k in ("image_size", "num_keypoints", "num_points")),
        ],  # fmt: skip
        "outs": list(ASSETS),
    }


NOT_REHEARSED_OUTS = ("${active.results_root}/credit_lab",)
"""Outputs of stages the rehearsal does not run: a notebook's slot naming one falls back to
the notebook's own file (the notebook then says the results are missing)."""


def _rehearsed_items(items: dict) -> dict:
    """A stage's ``foreach`` items with their ``NOT_REHEARSED_OUTS`` slots replaced."""
    return {
        key: {slot: f"notebooks/{key}.py" if v in NOT_REHEARSED_OUTS else v
              for slot, v in item.items()} if isinstance(item, dict) else item
        for key, item in items.items()
    }  # fmt: skip


LARGE_OUTS = ("/figures/", "/notebooks/")
"""Rehearsal outputs kept in the DVC cache, not git: figures (8,192-point HTML views) and
executed notebooks (~70 MB); its metrics, tables, predictions and logs are committed."""


def _cached_if_large(out):
    """A ``{path: {cache: false}}`` out of ``LARGE_OUTS`` becomes a cached out (its path)."""
    if isinstance(out, dict):
        ((path, opts),) = out.items()
        if any(part in path for part in LARGE_OUTS):
            rest = {k: v for k, v in (opts or {}).items() if k != "cache"}
            return {path: rest} if rest else path
    return out


def rehearsal_pipeline(main: dict) -> dict:
    """studies/paper_sim/dvc.yaml from the repository's dvc.yaml (a dict): the stages in
    ``PIPELINE_STAGES`` run from the root (``wdir``) on studies/paper_sim/params.yaml, after
    ``rehearsal_assets``; the top-level plots are left out."""
    import copy

    stages = {"rehearsal_assets": _assets_stage()}
    for name in PIPELINE_STAGES:
        stage = copy.deepcopy(main["stages"][name])
        body = stage.get("do", stage)
        body["cmd"] = body["cmd"].replace(
            "--params params.yaml", "--params studies/paper_sim/params.yaml"
        )
        body["deps"] = [*body.get("deps", []), *EXTRA_DEPS.get(name, ())]
        body["params"] = [STUDY_PARAMS if p == "profile" else p for p in body.get("params", [])]
        body["outs"] = [_cached_if_large(o) for o in body.get("outs", [])]
        if isinstance(stage.get("foreach"), dict):
            stage["foreach"] = _rehearsed_items(stage["foreach"])
        stages[name] = {"wdir": "../..", **stage} if "do" not in stage else stage
        if "do" in stage:
            stage["do"] = {"wdir": "../..", **body}
    return {"stages": stages}  # vars: ./params.yaml (profile, active), which DVC loads itself


def pipeline_text(root: Path | None = None) -> str:
    """The text of studies/paper_sim/dvc.yaml, generated from ``root``/dvc.yaml."""
    import yaml

    root = Path(root) if root is not None else PIPELINE.parent.parent.parent
    main = yaml.safe_load((root / "dvc.yaml").read_text())
    body = yaml.safe_dump(rehearsal_pipeline(main), sort_keys=False, width=100)
    return HEADER + body


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write or check studies/paper_sim/dvc.yaml")
    ap.add_argument("--write", action="store_true", help="(re)write it from dvc.yaml")
    args = ap.parse_args(argv)
    text = pipeline_text()
    if args.write:
        PIPELINE.write_text(text)
        print(f"wrote {PIPELINE}")
    elif PIPELINE.read_text() != text:
        raise SystemExit(f"{PIPELINE} is stale: python -m pointvl.rehearsal --write")


if __name__ == "__main__":
    main()
