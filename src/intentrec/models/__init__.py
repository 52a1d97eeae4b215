"""Sequence models behind one interface (`SequentialModel`): IntentRec (V0-V3), SASRec, BERT4Rec,
GRU4Rec and the popularity and recently-viewed baselines."""

from intentrec.models.base import HeadSpec, ModelOutput, SequentialModel
from intentrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from intentrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from intentrec.models.intentrec import IntentRec, IntentRecConfig
from intentrec.models.popularity import Popularity
from intentrec.models.recent import Recent
from intentrec.models.sasrec import sasrec

__all__ = [
    "BERT4Rec",
    "BERT4RecConfig",
    "GRU4Rec",
    "GRU4RecConfig",
    "HeadSpec",
    "IntentRec",
    "IntentRecConfig",
    "ModelOutput",
    "Popularity",
    "Recent",
    "SequentialModel",
    "sasrec",
]
