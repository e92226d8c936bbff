"""Shared encoder + token head + MRC start/end heads, and the joint loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch_types import EncoderInputs, MrcBatch, NerBatch


class BioNERModel(nn.Module):
    """Encoder + dropout + a token-classification head and two MRC heads (start, end)."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.ner_head = nn.Linear(hidden, num_labels)
        self.start_head = nn.Linear(hidden, 1)
        self.end_head = nn.Linear(hidden, 1)
        # Same initialisation as Hugging Face heads (normal, std = initializer_range; bias 0),
        # so that beta = 0 is the plain token-classification recipe.
        std = getattr(encoder.config, "initializer_range", 0.02)
        for head in (self.ner_head, self.start_head, self.end_head):
            nn.init.normal_(head.weight, std=std)
            nn.init.zeros_(head.bias)

    def hidden(self, batch: EncoderInputs) -> torch.Tensor:
        # packed rows restart their positions at every encoded row
        packed = {"position_ids": batch["position_ids"]} if "position_ids" in batch else {}
        out = self.encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
            **packed,
        )
        return self.dropout(out.last_hidden_state)

    def ner_logits(self, batch: EncoderInputs) -> torch.Tensor:
        return self.ner_head(self.hidden(batch))

    def mrc_logits(self, batch: EncoderInputs) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(batch)
        return self.start_head(h).squeeze(-1), self.end_head(h).squeeze(-1)

    def forward(
        self, ner: NerBatch | None = None, mrc: MrcBatch | None = None, alpha: float = 1.0, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Joint loss alpha * CE(NER) + beta * (BCE(start) + BCE(end)); a missing batch adds 0.

        One call does both tasks so that DDP sees a single forward and reduces gradients once. A
        batch that is one micro-batch of a larger optimizer batch carries `loss_denom`, that whole
        batch's count (labelled tokens, passage words): its loss is then its share of the batch's mean.
        """
        zero = self.ner_head.weight.new_zeros(())
        do_ner, do_mrc = ner is not None and alpha > 0, mrc is not None and beta > 0
        if do_ner and do_mrc and same_input(ner, mrc):
            # Query source `none` with one entity type: the MRC input [CLS] p [SEP] is the NER
            # input, so one encoder pass gives H for both heads (one dropout mask, half the work).
            h = self.hidden(ner)
            l_ner = ner_loss(self.ner_head(h), ner["labels"], ner.get("loss_denom"), ner.get("o_allowed"))
            l_mrc = mrc_loss(self.start_head(h).squeeze(-1), self.end_head(h).squeeze(-1), mrc)
        else:
            l_ner = (
                ner_loss(self.ner_logits(ner), ner["labels"], ner.get("loss_denom"), ner.get("o_allowed"))
                if do_ner
                else zero
            )
            l_mrc = mrc_loss(*self.mrc_logits(mrc), mrc) if do_mrc else zero
        return alpha * l_ner + beta * l_mrc, l_ner.detach(), l_mrc.detach()

    def extend_labels(self, old: list[str], new: list[str]) -> None:
        """A token head over `new` labels: the rows of labels in `old` copied bit for bit (a model
        extended with entity types keeps what it knew), other rows initialised as a new head's."""
        missing = [lab for lab in old if lab not in new]
        if missing:
            raise ValueError(f"the new label set lacks {missing}: an extension only adds labels")
        head = nn.Linear(self.ner_head.in_features, len(new)).to(self.ner_head.weight.device)
        nn.init.normal_(head.weight, std=getattr(self.encoder.config, "initializer_range", 0.02))
        nn.init.zeros_(head.bias)
        with torch.no_grad():
            for i, lab in enumerate(old):
                head.weight[new.index(lab)] = self.ner_head.weight[i]
                head.bias[new.index(lab)] = self.ner_head.bias[i]
        self.ner_head = head

    def freeze_unused_heads(self, alpha: float, beta: float) -> None:
        """Heads that get no loss are frozen, so DDP does not wait for their gradients."""
        for p in self.ner_head.parameters():
            p.requires_grad_(alpha > 0)
        for head in (self.start_head, self.end_head):
            for p in head.parameters():
                p.requires_grad_(beta > 0)


def same_input(a: EncoderInputs, b: EncoderInputs) -> bool:
    """Whether two batches feed the encoder the same tensors (no token_type_ids = all zeros)."""
    ids = a["input_ids"]
    if ids.shape != b["input_ids"].shape or not torch.equal(ids, b["input_ids"]):
        return False
    if not torch.equal(a["attention_mask"], b["attention_mask"]):
        return False
    ta, tb = a.get("token_type_ids"), b.get("token_type_ids")
    ta = torch.zeros_like(ids) if ta is None else ta
    tb = torch.zeros_like(ids) if tb is None else tb
    return torch.equal(ta, tb)


def ner_loss(
    logits: torch.Tensor, labels: torch.Tensor, denom: torch.Tensor | None = None, o_allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative log-likelihood over labelled tokens: their mean, or their sum over `denom` (a
    micro-batch's share of its batch's mean).

    Under partial annotation (`o_allowed`, rows x labels, or rows x positions x labels for packed
    rows, which hold several sentences) a gold B-/I- tag is exact, and a gold O
    means "O, or a tag of a type this row's corpus does not annotate": its loss is minus the log of
    the summed probability of that allowed set (Greenberg et al. 2018). A row whose allowed set is
    O alone costs exactly the cross-entropy.
    """
    flat, gold = logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1)
    if o_allowed is None:
        if denom is None:
            return F.cross_entropy(flat, gold, ignore_index=-100)
        return F.cross_entropy(flat, gold, ignore_index=-100, reduction="sum") / denom
    logp = F.log_softmax(flat, dim=-1)
    if o_allowed.dim() == 2:
        o_allowed = o_allowed[:, None, :].expand(*labels.shape, o_allowed.size(-1))
    allowed = o_allowed.reshape(flat.shape)
    valid = gold != -100
    exact = logp.gather(1, gold.clamp(min=0)[:, None]).squeeze(1)
    marginal = torch.logsumexp(logp.masked_fill(~allowed, float("-inf")), dim=-1)
    nll = -torch.where(gold == 0, marginal, exact)[valid].sum()  # label 0 is O
    return nll / (denom if denom is not None else valid.sum().clamp(min=1))


def mrc_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, batch: MrcBatch) -> torch.Tensor:
    """BCE(start) + BCE(end), averaged over passage words (query, specials, padding masked); over
    the whole optimizer batch's passage words when the batch is a micro-batch (`loss_denom`)."""
    mask = batch["label_mask"]
    denom = batch["loss_denom"] if "loss_denom" in batch else mask.sum().clamp(min=1.0)
    if "row_weight" in batch:  # sampled entity types: each row weighted by 1 / its probability
        weight = batch["row_weight"]
        mask = mask * (weight if weight.dim() == 2 else weight[:, None])  # packed rows: a weight per position
    bce = F.binary_cross_entropy_with_logits
    ls = (bce(start_logits.float(), batch["start_labels"], reduction="none") * mask).sum() / denom
    le = (bce(end_logits.float(), batch["end_labels"], reduction="none") * mask).sum() / denom
    return ls + le
