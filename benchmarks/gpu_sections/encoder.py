"""Section 5a: our encoder against transformers' BertModel (sdpa) on the same random weights."""

from __future__ import annotations

import tempfile

import torch

from gpu_sections.common import DTYPES, Plan, Section, instances_per_second
from prumux import Encoder, hardware_name

TITLE = "5a. Encoder against transformers' BertModel (sdpa)"
ENCODER_RATIO_FLOOR = 1.0  # ours / BertModel


def encoder_section(plan: Plan, device: torch.device) -> Section:
    """Examples/s of both encoders in each dtype, best of interleaved rounds, and how far apart their outputs are."""
    from transformers import BertConfig, BertModel

    section = Section(TITLE)
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        config = BertConfig(**{k: v for k, v in plan.shape.items() if k not in ("model_type", "transformers_version")})
        BertModel(config, add_pooling_layer=False).save_pretrained(folder)
        ours = Encoder.from_pretrained(folder).eval()
        theirs = BertModel.from_pretrained(folder, attn_implementation="sdpa", add_pooling_layer=False).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = [
        torch.randint(1000, config.vocab_size, (128, plan.seq_len), generator=generator).to(device)
        for _ in range(plan.batches)
    ]
    mask = torch.ones_like(inputs[0])
    forwards = {
        "ours": lambda ids, m: ours(ids, m),
        "BertModel": lambda ids, m: theirs(input_ids=ids, attention_mask=m),
    }
    section.lines += [
        f"{hardware_name(device)}; {config.num_hidden_layers} layers, hidden {config.hidden_size}; batch 128, "
        f"length {plan.seq_len}; {plan.batches} timed batch(es), best of {plan.rounds} interleaved round(s)",
        "",
        "| dtype | ours (examples/s) | BertModel (examples/s) | ours / BertModel | rel. difference of outputs |",
        "|---|---|---|---|---|",
    ]
    for name, dtype in DTYPES.items():
        ours.to(device=device, dtype=dtype)
        theirs.to(device=device, dtype=dtype)
        with torch.inference_mode():
            expected = theirs(input_ids=inputs[0], attention_mask=mask).last_hidden_state.float()
            difference = ((ours(inputs[0], mask).float() - expected).norm() / expected.norm()).item()
        best = {key: 0.0 for key in forwards}
        for round_index in range(plan.rounds):
            for key, forward in forwards.items():
                speed = instances_per_second(forward, inputs, mask, warmup=0 if round_index else 1)
                best[key] = max(best[key], speed)
        ratio = best["ours"] / best["BertModel"]
        section.lines.append(
            f"| {name} | {best['ours']:,.0f} | {best['BertModel']:,.0f} | {ratio:.2f}x | {difference:.1e} |"
        )
        if ratio < ENCODER_RATIO_FLOOR:
            section.short.append(f"our encoder runs at {ratio:.2f}x BertModel in {name}; see: the encoder table")
    ours.to("cpu")
    theirs.to("cpu")
    return section
