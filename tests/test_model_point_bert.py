"""Point-BERT encoder: grouping against naive loops, invariances, shapes, checkpoint key mapping."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from pointvl.model.point_bert import (
    Encoder,
    PointBertConfig,
    PointBertEncoder,
    farthest_point_sample,
    group_points,
    load_point_bert_state_dict,
    map_point_bert_keys,
    tiny_point_bert_config,
)


def naive_fps(xyz: torch.Tensor, s: int) -> list[int]:
    chosen = [0]
    for _ in range(s - 1):
        best, best_d = None, -1.0
        for i in range(xyz.shape[0]):
            d = min(float(((xyz[i] - xyz[j]) ** 2).sum()) for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_fps_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 60, 3, generator=g, dtype=torch.float64)
    idx = farthest_point_sample(xyz, 8)
    for b in range(2):
        assert idx[b].tolist() == naive_fps(xyz[b], 8)


def test_knn_groups_match_brute_force():
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(2, 100, 6, generator=g, dtype=torch.float64)
    neigh, centers = group_points(pts, num_groups=5, points_per_group=7)
    assert neigh.shape == (2, 5, 7, 6) and centers.shape == (2, 5, 3)
    for b in range(2):
        for gi in range(5):
            d = ((pts[b, :, :3] - centers[b, gi]) ** 2).sum(-1)
            want = set(d.argsort()[:7].tolist())
            got = neigh[b, gi, :, :3] + centers[b, gi]
            got_idx = {int(((pts[b, :, :3] - p) ** 2).sum(-1).argmin()) for p in got}
            assert got_idx == want
            # extra channels (normals) are carried unchanged, xyz is centred
            for k in range(7):
                i = int(((pts[b, :, :3] - got[k]) ** 2).sum(-1).argmin())
                torch.testing.assert_close(neigh[b, gi, k, 3:], pts[b, i, 3:])


def test_group_embedding_is_invariant_to_point_order():
    enc = Encoder(32, in_channels=6).eval()
    x = torch.randn(2, 4, 16, 6)
    perm = torch.randperm(16)
    torch.testing.assert_close(enc(x), enc(x[:, :, perm]), atol=1e-5, rtol=1e-5)


def test_encoder_shapes_tiny_and_translation_invariance_of_groups():
    cfg = tiny_point_bert_config()
    enc = PointBertEncoder(cfg).eval()
    pts = torch.randn(3, cfg.num_points, 6)
    tokens, centers = enc(pts)
    assert tokens.shape == (3, cfg.num_groups + 1, cfg.hidden_size)
    assert centers.shape == (3, cfg.num_groups, 3)
    # groups are centred: translating the cloud moves the centres and nothing else
    shifted = pts.clone()
    shifted[..., :3] += torch.tensor([0.3, -0.2, 0.1])
    n1, c1 = group_points(pts, cfg.num_groups, cfg.points_per_group)
    n2, c2 = group_points(shifted, cfg.num_groups, cfg.points_per_group)
    torch.testing.assert_close(n1, n2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c1 + torch.tensor([0.3, -0.2, 0.1]), c2)


def test_bad_shapes_raise():
    enc = PointBertEncoder(tiny_point_bert_config())
    with pytest.raises(ValueError, match="expected shape"):
        enc(torch.randn(1024, 6))
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match="num_groups"):
        PointBertConfig(num_points=16, num_groups=32)


def published_point_bert_keys(depth: int = 12, C: int = 384, E: int = 256) -> dict[str, tuple]:
    """Key names and shapes of Point-BERT's released ``PointTransformer`` / ``MaskTransformer``
    (models/Point_BERT.py, models/dvae.py: Encoder), written out from the release."""
    keys = {
        "cls_token": (1, 1, C),
        "cls_pos": (1, 1, C),
        "encoder.first_conv.0.weight": (128, 3, 1),
        "encoder.first_conv.0.bias": (128,),
        "encoder.first_conv.1.weight": (128,),
        "encoder.first_conv.1.bias": (128,),
        "encoder.first_conv.1.running_mean": (128,),
        "encoder.first_conv.1.running_var": (128,),
        "encoder.first_conv.1.num_batches_tracked": (),
        "encoder.first_conv.3.weight": (256, 128, 1),
        "encoder.first_conv.3.bias": (256,),
        "encoder.second_conv.0.weight": (512, 512, 1),
        "encoder.second_conv.0.bias": (512,),
        "encoder.second_conv.1.weight": (512,),
        "encoder.second_conv.1.bias": (512,),
        "encoder.second_conv.1.running_mean": (512,),
        "encoder.second_conv.1.running_var": (512,),
        "encoder.second_conv.1.num_batches_tracked": (),
        "encoder.second_conv.3.weight": (E, 512, 1),
        "encoder.second_conv.3.bias": (E,),
        "reduce_dim.weight": (C, E),
        "reduce_dim.bias": (C,),
        "pos_embed.0.weight": (128, 3),
        "pos_embed.0.bias": (128,),
        "pos_embed.2.weight": (C, 128),
        "pos_embed.2.bias": (C,),
        "norm.weight": (C,),
        "norm.bias": (C,),
    }
    for i in range(depth):
        p = f"blocks.blocks.{i}."
        keys |= {
            p + "norm1.weight": (C,),
            p + "norm1.bias": (C,),
            p + "attn.qkv.weight": (3 * C, C),
            p + "attn.proj.weight": (C, C),
            p + "attn.proj.bias": (C,),
            p + "norm2.weight": (C,),
            p + "norm2.bias": (C,),
            p + "mlp.fc1.weight": (4 * C, C),
            p + "mlp.fc1.bias": (4 * C,),
            p + "mlp.fc2.weight": (C, 4 * C),
            p + "mlp.fc2.bias": (C,),
        }
    return keys


def _fabricate(keys: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (torch.tensor(7) if s == () else torch.randn(*s, generator=g)) for k, s in keys.items()
    }


@pytest.fixture(scope="module")
def published_encoder():
    return PointBertEncoder(PointBertConfig())  # published size, default = 8192 / 512 / 384 / 12


def test_published_size_has_published_keys_and_param_count(published_encoder):
    own = {k: tuple(v.shape) for k, v in published_encoder.state_dict().items()}
    assert own == published_point_bert_keys()
    n = sum(p.numel() for p in published_encoder.parameters())
    assert 21_000_000 < n < 23_000_000  # Point-BERT's transformer: ~22.1 M


def test_pretraining_checkpoint_maps_onto_ours(published_encoder):
    weights = _fabricate(published_point_bert_keys())
    base = {f"module.transformer_q.{k}": v for k, v in weights.items()}
    base |= {f"module.transformer_k.{k}": v for k, v in list(weights.items())[:3]}  # momentum
    base |= {
        "module.transformer_q.mask_token": torch.zeros(1, 1, 384),
        "module.transformer_q.lm_head.weight": torch.zeros(8192, 384),
        "module.transformer_q.cls_head.0.weight": torch.zeros(256, 384),
        "module.dvae.encoder.first_conv.0.weight": torch.zeros(128, 3, 1),
        "module.queue": torch.zeros(256, 16384),
    }
    report = load_point_bert_state_dict(published_encoder, {"base_model": base, "epoch": 300})
    assert report.missing == []
    assert report.unexpected == ["lm_head.weight", "mask_token"]
    assert any(k.startswith("module.transformer_k.") for k in report.ignored)
    assert (
        "module.queue" in report.ignored
        and "module.transformer_q.cls_head.0.weight" in report.ignored
    )
    own = published_encoder.state_dict()
    for k, v in weights.items():
        torch.testing.assert_close(own[k], v.to(own[k].dtype))


def test_finetuned_checkpoint_with_base_model_prefix_and_missing_keys(published_encoder):
    weights = _fabricate(published_point_bert_keys(), seed=1)
    weights.pop("norm.weight")
    sd = {f"base_model.{k}": v for k, v in weights.items()}
    sd["base_model.cls_head_finetune.0.weight"] = torch.zeros(256, 768)
    report = load_point_bert_state_dict(published_encoder, sd)
    assert report.missing == ["norm.weight"]
    assert report.unexpected == ["cls_head_finetune.0.weight"]
    mapped, _ = map_point_bert_keys({"base_model": {"module.encoder.reduce": 1}})
    assert mapped == {"encoder.reduce": 1}


def test_shape_mismatch_is_loud():
    enc = PointBertEncoder(tiny_point_bert_config())
    with pytest.raises(ValueError, match="shape"):
        load_point_bert_state_dict(enc, _fabricate(published_point_bert_keys()))


class _Payload:
    """A pickle that runs code when loaded (touches a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_malicious_checkpoint_runs_no_code(tmp_path):
    """Was: torch.load(weights_only=False) executed code from a user-supplied .pth."""
    from pointvl.config import DataError
    from pointvl.model.point_bert import read_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "point_bert.pth"
    torch.save({"base_model": {}, "evil": _Payload(str(marker))}, path)
    enc = PointBertEncoder(tiny_point_bert_config())
    with pytest.raises(DataError, match=r"point_bert.pth.*refused"):
        load_point_bert_state_dict(enc, path)
    assert not marker.exists()
    # a plain checkpoint (tensors, numbers, dicts) and safetensors load
    torch.save({"base_model": enc.state_dict(), "epoch": 3}, tmp_path / "ok.pth")
    assert load_point_bert_state_dict(enc, tmp_path / "ok.pth").loaded
    from safetensors.torch import save_file

    save_file({f"base_model.{k}": v.contiguous() for k, v in enc.state_dict().items()},
              tmp_path / "ok.safetensors")  # fmt: skip
    assert read_checkpoint(tmp_path / "ok.safetensors").keys() == {
        f"base_model.{k}" for k in enc.state_dict()
    }


def test_grouping_runs_in_fp32_when_the_encoder_is_bf16():
    """A bf16 encoder groups the fp32 points (centres and neighbours as in fp32), then casts
    the groups: in bf16, 8-bit mantissas tie distances and change the selection."""
    cfg = tiny_point_bert_config(num_points=512, num_groups=32, points_per_group=16)
    enc = PointBertEncoder(cfg).eval()
    pts = torch.rand(2, 512, 6, generator=torch.Generator().manual_seed(0)) - 0.5
    _, centers32 = group_points(pts[..., : cfg.in_channels], 32, 16)
    _, centers_bf = enc.to(torch.bfloat16)(pts)
    torch.testing.assert_close(centers_bf, centers32.to(torch.bfloat16), rtol=0, atol=0)
    _, naive = group_points(pts[..., : cfg.in_channels].to(torch.bfloat16), 32, 16)
    assert not torch.equal(naive, centers_bf)  # grouping bf16 points picks other centres
