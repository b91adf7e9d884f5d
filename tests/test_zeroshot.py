"""Zero-shot VLM rows of Table 1: reply parser, coordinate conventions, scoring, the stage.

The end-to-end test builds a tiny random-init Qwen2.5-VL (its own BPE tokenizer, the slow PIL
image processor, no torchvision), saves it to a folder and runs the stage's real loading path
(AutoProcessor / AutoModelForImageTextToText from that folder) on the smoke benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pointvl.eval.zeroshot import (
    Reply2D,
    grounding_prompt,
    parse_reply,
    per_sample_scores,
    reply_to_pixels,
    resolve_coords,
    score_sample,
    to_image_pixels,
)
from pointvl.rewards import field_rewards
from pointvl.schema import ParsedOutput
from pointvl.stages import zeroshot as stage

ROOT = Path(__file__).resolve().parent.parent
CLEAN = '{"bbox2d": [10, 20, 50, 60], "kpts2d": [[15, 25], [60, 30]]}'


# ----------------------------------------------------------------------------- parser
@pytest.mark.parametrize(
    "text",
    [
        CLEAN,
        f"Sure! Here it is:\n```json\n{CLEAN}\n```\nHope this helps.",
        f"The object is located at {CLEAN} in pixel coordinates.",
        "```json\n{'bbox_2d': [10, 20, 50, 60], 'keypoints': [[15, 25], [60, 30],],}\n```",
        '{"answer": {"bbox": [[10, 20], [50, 60]], "points": [{"x": 15, "y": 25}, '
        '{"point_2d": [60, 30]}]}}',
        '[{"bbox_2d": [10, 20, 50, 60], "label": "chair"}]\n'
        '[{"point_2d": [15, 25], "label": "a"}, {"point_2d": [60, 30], "label": "b"}]',
    ],
    ids=["clean", "fenced", "prose", "aliases_lenient", "nested", "qwen_native"],
)
def test_parse_reply_recovers_both_fields(text):
    r = parse_reply(text)
    assert r.ok and r.errors == {"bbox2d": None, "kpts2d": None}
    np.testing.assert_array_equal(r.bbox2d, [10, 20, 50, 60])
    np.testing.assert_array_equal(r.kpts2d, [[15, 25], [60, 30]])


@pytest.mark.parametrize(
    "text, box_err, kpt_err",
    [
        ('{"bbox2d": [10, 20, 50, 60], "kpts2d": [[15, 25], [60', None, "invalid"),  # truncated
        ('{"bbox2d": [10, 20, 50, 60]}', None, "missing"),
        ('{"bbox2d": [10, 20, 50], "kpts2d": "none"}', "invalid", "invalid"),
        ('{"bbox2d": [NaN, 20, 50, 60], "kpts2d": [[true, 1]]}', "invalid", "invalid"),
        ('{"bbox2d": [1e999, 20, 50, 60], "kpts2d": [[1, 2, 3]]}', "invalid", "invalid"),
        ("I cannot see any chair.", "no_json", "no_json"),
        ("{{{{ [1, 2", "no_json", "no_json"),
        ("", "no_json", "no_json"),
        (None, "no_json", "no_json"),
    ],
)
def test_parse_reply_failures_are_codes_not_exceptions(text, box_err, kpt_err):
    r = parse_reply(text)
    assert r.errors == {"bbox2d": box_err, "kpts2d": kpt_err}
    assert (r.bbox2d is None) == (box_err is not None)
    assert (r.kpts2d is None) == (kpt_err is not None)
    row = score_sample(r, [10, 20, 50, 60])
    assert row["parse_fail"] == 1.0
    if box_err is not None:
        assert row["iou2d"] == 0.0 and row["parse_fail/bbox2d"] == 1.0
    if kpt_err is not None:
        assert row["kpa2d"] == 0.0 and row["parse_fail/kpts2d"] == 1.0


def test_parse_reply_strict_keypoint_count():
    assert parse_reply(CLEAN, num_keypoints=2).ok
    r = parse_reply(CLEAN, num_keypoints=16)
    assert r.errors["kpts2d"] == "wrong_count" and r.kpts2d is None and r.bbox2d is not None


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list('{}[]",:0123456789.-eE aNbox_2dkptsTrue\n`'))) | st.text()
)
def test_parse_reply_never_raises(text):
    r = parse_reply(text)
    assert set(r.errors) == {"bbox2d", "kpts2d"}
    if r.bbox2d is not None:
        assert r.bbox2d.shape == (4,) and np.isfinite(r.bbox2d).all()
    if r.kpts2d is not None:
        assert r.kpts2d.ndim == 2 and r.kpts2d.shape[1] == 2 and np.isfinite(r.kpts2d).all()
    row = score_sample(r, [0, 0, 10, 10])
    assert all(0.0 <= v <= 1.0 for v in row.values())


# ----------------------------------------------------------------------------- coordinates
def test_coordinate_conventions_map_to_original_pixels():
    size = (200, 100)  # (W, H) of the original image
    xy = np.array([[500.0, 500.0], [1000.0, 0.0]])
    np.testing.assert_allclose(to_image_pixels(xy, "norm1000", size), [[100, 50], [200, 0]])
    np.testing.assert_allclose(to_image_pixels(xy / 1000, "norm1", size), [[100, 50], [200, 0]])
    # Qwen2.5-VL: pixels of the resized input (224 x 112 here) -> x * 200/224, y * 100/112
    np.testing.assert_allclose(
        to_image_pixels([[224.0, 112.0], [112.0, 56.0]], "pixels", size, (224, 112)),
        [[200, 100], [100, 50]],
    )
    np.testing.assert_allclose(to_image_pixels([[3.0, 4.0]], "pixels", size), [[3, 4]])
    box = reply_to_pixels(parse_reply(CLEAN), "norm1000", size)
    np.testing.assert_allclose(box.bbox2d, [2, 2, 10, 6])
    np.testing.assert_allclose(box.kpts2d, [[3, 2.5], [12, 3]])
    with pytest.raises(ValueError, match="coords='norm100'"):
        to_image_pixels(xy, "norm100", size)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        to_image_pixels([1.0, 2.0, 3.0], "norm1", size)


def test_resolve_coords_from_model_type(tmp_path):
    for model_type, want in [("qwen2_5_vl", "pixels"), ("internvl", "norm1000")]:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert resolve_coords("auto", tmp_path) == want
        assert resolve_coords("norm1", tmp_path) == "norm1"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="'llava'"):
        resolve_coords("auto", tmp_path)


def test_prompt_names_object_count_and_convention():
    p = grounding_prompt("coffee_mug", 16, "norm1000")
    assert "coffee mug" in p and "16 keypoints" in p and "0 to 1000" in p and '"bbox2d"' in p


# ----------------------------------------------------------------------------- scoring
def test_scores_equal_the_reward_functions_on_a_hand_example():
    gt = np.array([10.0, 20.0, 50.0, 60.0])
    box = np.array([30.0, 40.0, 70.0, 80.0])  # overlap 20 x 20 = 400; union 2800
    kpts = np.array([[15.0, 25.0], [60.0, 30.0], [50.0, 60.0], [0.0, 0.0]])  # 2 of 4 inside
    row = score_sample(Reply2D(box, kpts, {"bbox2d": None, "kpts2d": None}), gt)
    assert row["iou2d"] == pytest.approx(400 / 2800) and row["kpa2d"] == 0.5
    parsed = ParsedOutput(values={"bbox2d": box, "kpts2d": kpts}, errors={})
    target = {"bbox2d": gt, "bbox3d": np.array([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])}
    ref = field_rewards(parsed, target, quant_bins=100)
    assert row["iou2d"] == ref["bbox2d"] and row["kpa2d"] == ref["kpts2d"]
    # the same reply written in 0-1000 coordinates of a 200 x 100 image scores the same
    reply = json.dumps(
        {"bbox2d": (box * [5, 10, 5, 10]).tolist(), "kpts2d": (kpts * [5, 10]).tolist()}
    )
    per = per_sample_scores(
        [reply], [{"bbox2d": gt, "kpts2d": np.zeros((16, 2))}], "norm1000", [(200, 100)]
    )
    assert per["iou2d"][0] == pytest.approx(400 / 2800) and per["kpa2d"][0] == 0.5
    assert per["parse_fail"][0] == 0.0 and per["kpts_count_ok"][0] == 0.0


# ----------------------------------------------------------------------------- the stage
def _write_params(tmp_path, section: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"profile": "smoke", "zeroshot": section}))
    return str(path)


def test_stage_without_models_records_not_run(tmp_path):
    section = {
        "models": {"Qwen2.5-VL-7B": None, "MiMo-VL": str(tmp_path / "absent")},
        "metrics": str(tmp_path / "zeroshot.json"),
        "predictions_dir": str(tmp_path / "pred"),
    }
    if not torch.cuda.is_available():
        section["models"]["InternVL3.5"] = {"path": str(tmp_path), "device": "cuda"}
    cmd = [sys.executable, "-m", "pointvl.stages.zeroshot", "--profile", "smoke"]
    cmd += ["--params", _write_params(tmp_path, section)]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=120, capture_output=True)
    out = json.loads((tmp_path / "zeroshot.json").read_text())
    assert set(out) == set(section["models"])
    assert all(list(v) == ["status"] and v["status"].startswith("not run: ") for v in out.values())
    assert "is null" in out["Qwen2.5-VL-7B"]["status"]
    assert "not an existing folder" in out["MiMo-VL"]["status"]
    if "InternVL3.5" in out:
        assert "torch.cuda.is_available() is False" in out["InternVL3.5"]["status"]
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"coords": "norm100"}, "zeroshot.coords='norm100'"),
        ({"dtype": "fp8"}, "zeroshot.dtype='fp8'"),
        ({"models": {"X": {"path": None, "coords": "pix"}}}, "models['X'].coords='pix'"),
        ({"models": {"X": {"pth": "a"}}}, "unknown key(s) ['pth']"),
        ({"models": {"X": 3}}, "models['X']=3"),
        ({"device": "gpu"}, "zeroshot.device='gpu'"),
    ],
)
def test_config_errors_name_the_bad_value(tmp_path, bad, message):
    with pytest.raises(SystemExit) as err:
        stage.main(["--params", _write_params(tmp_path, bad)])
    assert err.value.code == 2 and message in str(err.value)


# ----------------------------------------------------------------------------- end to end
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>"]
SPECIALS += ["<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _save_tiny_qwen25_vl(folder) -> None:
    """A ~0.15 M-parameter random Qwen2.5-VL + its processor parts, saved like a hub folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([CLEAN, grounding_prompt("chair", 16, "pixels")], trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    tok.chat_template = CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    text = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e4},
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        fullatt_block_indexes=[0],
        window_size=56,
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)


def test_stage_end_to_end_on_a_tiny_random_qwen25_vl(smoke_data, tmp_path):
    _save_tiny_qwen25_vl(tmp_path / "tiny-qwen")
    section = {
        "models": {"Qwen2.5-VL-7B": str(tmp_path / "tiny-qwen"), "InternVL3.5": None},
        "data_dir": str(smoke_data),
        "limit": 3,
        "batch_size": 2,
        "max_new_tokens": 16,
        "dtype": "float32",
        "device": "cpu",
        "n_boot": 100,
        "predictions_dir": str(tmp_path / "pred"),
        "metrics": str(tmp_path / "zeroshot.json"),
    }
    stage.main(["--params", _write_params(tmp_path, section)])
    out = json.loads((tmp_path / "zeroshot.json").read_text())
    assert out["InternVL3.5"]["status"].startswith("not run: ")
    res = out["Qwen2.5-VL-7B"]
    assert res["status"] == "ok", res["status"]
    for m in ("iou2d", "kpa2d", "parse_fail"):
        assert set(res[m]) == {"mean", "lo", "hi", "n"} and res[m]["n"] == 3
        assert res[m]["lo"] <= res[m]["mean"] <= res[m]["hi"]
    # random weights write garbage: parse failures scoring 0, not a crash
    assert res["parse_fail"]["mean"] == 1.0 and res["iou2d"]["mean"] == 0.0
    meta = res["_meta"]
    assert meta["n"] == 3 and meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert meta["coords"] == "pixels" and meta["model_class"].startswith("Qwen2_5_VL")
    rows = [json.loads(r) for r in (tmp_path / "pred/zeroshot_qwen2_5_vl_7b.jsonl").open()]
    assert len(rows) == 3 and all(set(r) >= {"uid", "question", "completion"} for r in rows)
    # 48 x 48 smoke images are resized to Qwen's 28-multiple 56 x 56 input
    assert rows[0]["image_size"] == [48, 48] and rows[0]["input_size"] == [56, 56]
    assert "Locate the" in rows[0]["question"]
    # --only reruns one entry and keeps the others
    stage.main(["--params", _write_params(tmp_path, section), "--only", "InternVL3.5"])
    again = json.loads((tmp_path / "zeroshot.json").read_text())
    assert again["Qwen2.5-VL-7B"] == res
