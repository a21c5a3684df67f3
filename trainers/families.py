"""Model families: one base-model name that stands for a checkpoint per multiplexing width N.

PruMUX never trains multiplexing from a plain BERT: every (N, s) point with N > 1 starts from
the MUX-PLMs checkpoint pretrained (or also task-fine-tuned) with that N. A family names
them all, so `--model muxbert-base` is the paper's setup:

| family | N = 2, 5, 10 | N = 1 |
| --- | --- | --- |
| `muxbert-{small,base,large}` | `princeton-nlp/muxbert_<size>_gaussian_hadamard_index_pos_<N>` | BERT of that size |
| `muxbert-base-{mnli,qnli,qqp,sst2}` | `princeton-nlp/muxbert_base_<task>_gaussian_hadamard_index_pos_<N>` | `bert-base-uncased` |
| `muxelectra-base` | `princeton-nlp/muxelectra_base_gaussian_hadamard_index_pos_<N>` | `google/electra-base-discriminator` |
| `org/name_{N}` (any name with `{N}`) | the name with N filled in | the same, N = 1 |

N = 1 is the plain pretrained model of the same size and tokenizer, not a MUX-PLM: the
paper's (1, 0) baseline is BERT-base fine-tuned on the task and its (1, s) points are CoFi
prunings of BERT-base (the MUX-PLMs authors' own N = 1 baselines, `princeton-nlp/bert_<size>_1`,
can be had with a template). A family's tokenizer is that N = 1 model's, which every member
shares. Any other name is a single model used for every N.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MUX_WIDTHS = (2, 5, 10)
GLUE_FINE_TUNED = ("mnli", "qnli", "qqp", "sst2")
BERT_SIZES = {
    "small": "google/bert_uncased_L-4_H-512_A-8",  # MUX-PLMs' small shape: 4 layers, 512 wide, 8 heads
    "base": "bert-base-uncased",
    "large": "bert-large-uncased",
}


@dataclass(frozen=True)
class Family:
    """Checkpoints per N: `members` for the widths it was published with, or a `template` for any N."""

    name: str
    members: dict[int, str] | None = None
    template: str | None = None
    tokenizer: str | None = None  # None: each member's own

    def model_for(self, N: int) -> str:
        """The checkpoint of width N; ValueError naming the widths this family has."""
        if self.template is not None:
            return self.template.replace("{N}", str(N))
        if N not in self.members:
            widths = ", ".join(str(n) for n in sorted(self.members))
            raise ValueError(f"model family {self.name!r} has no N = {N} checkpoint (it has N = {widths})")
        return self.members[N]

    def check_widths(self, widths: Iterable[int]) -> None:
        for N in widths:
            self.model_for(N)

    def tokenizer_source(self, N: int) -> str:
        return self.tokenizer or self.model_for(N)


def _published(name: str, repo: str, plain: str) -> Family:
    members = {1: plain} | {n: f"princeton-nlp/{repo}_gaussian_hadamard_index_pos_{n}" for n in MUX_WIDTHS}
    return Family(name, members, tokenizer=plain)


FAMILIES: dict[str, Family] = {
    **{
        f"muxbert-{size}": _published(f"muxbert-{size}", f"muxbert_{size}", plain) for size, plain in BERT_SIZES.items()
    },
    **{
        f"muxbert-base-{task}": _published(f"muxbert-base-{task}", f"muxbert_base_{task}", BERT_SIZES["base"])
        for task in GLUE_FINE_TUNED
    },
    "muxelectra-base": _published("muxelectra-base", "muxelectra_base", "google/electra-base-discriminator"),
}


def family(name: str) -> Family | None:
    """The family a model name stands for (a known family or a `{N}` template), or None for a single model."""
    if name in FAMILIES:
        return FAMILIES[name]
    if "{N}" in name:
        if name.count("{N}") != 1 or "{" in name.replace("{N}", "") or "}" in name.replace("{N}", ""):
            raise ValueError(f"model template {name!r} must hold {{N}} once and no other braces")
        return Family(name, template=name)
    return None


def model_for(name: str, N: int) -> str:
    """The model name to load for width N: the family's member, or `name` itself."""
    found = family(name)
    return name if found is None else found.model_for(N)


def tokenizer_for(name: str, N: int) -> str:
    """The model whose tokenizer width-N points of `name` use."""
    found = family(name)
    return name if found is None else found.tokenizer_source(N)
