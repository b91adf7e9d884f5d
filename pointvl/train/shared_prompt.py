"""The loss pass with each prompt run once for its G completions (``prompt_sharing="prefix"``).

The G completions of a prompt share its P prompt tokens (point tokens, image tokens, the
question). TRL's loss pass runs every row in full, B (P + T) tokens through the stack. Here
each distinct prompt runs once, its KV cache is gathered to the B rows (autograd through the
gather sums the G rows' gradients into their prompt), and the completions run on top:

    U prompts (U, P) + point clouds / images  --forward, use_cache-->  hidden (U, P, d), cache
    cache[inverse]                                         (B, Hkv, P, dh) per layer
    y_0 .. y_{T-2} (B, T - 1) at positions last + 1, ...  -->  hidden (B, T - 1, d)
    hidden that predicts y_0 .. y_{T-1}: [prompt's last hidden[inverse], completion hidden]

``inverse`` (B,) maps each row to its prompt. Positions are those the full pass uses: the
prompt's M-RoPE positions as ``generate`` builds them (``eval.generate._prompt_positions``)
and text positions after it. Tokens through the stack: U P + B (T - 1) instead of B (P + T);
each attention query sees the same keys as in the full pass.

Equal to the full pass up to float rounding (``tests/test_shared_prompt.py`` asserts 1e-5 on
log-probs and entropies, ~1e-6 observed; gradients are summed in another order, since a
prompt's gradient is summed over its rows before the weight gradients). Rows are grouped by
prompt (ids and extras): two prompts on one sample run its point cloud and image twice here,
once under ``encoders``.
"""

from __future__ import annotations

import torch

from pointvl.eval.generate import _prompt_positions


def prefix_shared_hidden(
    model,
    unwrapped,
    prompt_batch: dict[str, torch.Tensor],
    inverse: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Hidden states (B, T, d) at the positions that predict ``completion_ids`` (B, T).

    ``model``: the policy as the trainer calls it (wrapped or not; its forward takes
    ``return_hidden``); ``unwrapped``: the same model unwrapped (builds the positions).
    ``prompt_batch``: the U distinct prompts, left-padded ``input_ids`` / ``attention_mask``
    (U, P) plus their point clouds / images; ``inverse`` (B,): row -> prompt.
    """
    T = completion_ids.shape[1]
    positions = _prompt_positions(unwrapped, prompt_batch)  # (U, P) or (4, U, P)
    out = model(**prompt_batch, position_ids=positions, use_cache=True, return_hidden=True)
    first = out.last_hidden_state[:, -1:][inverse]  # (B, 1, d): predicts y_0
    if T == 1:
        return first
    cache = out.cache
    if cache is None:
        raise RuntimeError(
            "prompt_sharing='prefix': the prompt pass returned no KV cache (gradient "
            "checkpointing turns it off); use prompt_sharing='encoders'"
        )
    cache.batch_select_indices(inverse)  # (B, Hkv, P, dh) per layer, with autograd
    bdim = positions.dim() - 2
    steps = torch.arange(1, T, device=positions.device)  # y_0 .. y_{T-2} sit at last + 1 ..
    comp_pos = positions[..., -1:].index_select(bdim, inverse) + steps  # (.., B, T - 1)
    mask = torch.cat([prompt_batch["attention_mask"][inverse], completion_mask[:, :-1]], dim=1)
    rest = model(
        input_ids=completion_ids[:, :-1],
        attention_mask=mask,  # (B, P + T - 1)
        position_ids=comp_pos,
        cache=cache,
        use_cache=True,
        return_hidden=True,
    ).last_hidden_state  # (B, T - 1, d)
    return torch.cat([first, rest], dim=1)  # (B, T, d)
