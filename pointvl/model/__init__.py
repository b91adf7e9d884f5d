"""pointvl.model: the hybrid point-image policy of Sec. 3.1 (Eqs. 2-4) and its processor.

Build the ``tiny`` policy (random init, CPU)::

    tok = train_bpe_tokenizer(texts, vocab_size=1024)     # or AutoTokenizer.from_pretrained(
    model, proc = build_tiny_policy(tok, ModelConfig())    #   "models/tiny/tokenizer")
    # any profile: build_policy(load_section(params, "model", ModelConfig), tok)
    batch = proc.batch([{"points": ..., "image": ..., "question": ..., "target": ...}])
    loss = model(**batch).loss                                  # Eq. (5)
    gen = model.generate(**proc.batch(samples, with_target=False), max_new_tokens=200,
                         eos_token_id=proc.eos_token_ids)       # point_clouds= is in the batch
"""

from pointvl.model.config import (
    ModelConfig,
    PointVLConfig,
    paper_model_config,
    paper_pointvl_config,
    tiny_pointvl_config,
)
from pointvl.model.point_bert import (
    PointBertConfig,
    PointBertEncoder,
    load_point_bert_state_dict,
    tiny_point_bert_config,
)
from pointvl.model.policy import (
    PointVLForConditionalGeneration,
    build_policy,
    build_tiny_policy,
)
from pointvl.model.processor import PointVLProcessor
from pointvl.model.tokenizer import special_token_ids, train_bpe_tokenizer

__all__ = [
    "ModelConfig",
    "PointBertConfig",
    "PointBertEncoder",
    "PointVLConfig",
    "PointVLForConditionalGeneration",
    "PointVLProcessor",
    "build_policy",
    "build_tiny_policy",
    "load_point_bert_state_dict",
    "paper_model_config",
    "paper_pointvl_config",
    "special_token_ids",
    "tiny_point_bert_config",
    "tiny_pointvl_config",
    "train_bpe_tokenizer",
]
