"""Sequence models: IntentRec (variants V0-V3) and SASRec."""

from intentrec.models.intentrec import HeadSpec, IntentRec, IntentRecConfig, ModelOutput
from intentrec.models.sasrec import sasrec

__all__ = ["HeadSpec", "IntentRec", "IntentRecConfig", "ModelOutput", "sasrec"]
