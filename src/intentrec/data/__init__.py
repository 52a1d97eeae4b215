"""Data layer: readers, the data model, intent labels, sequences, splits and batches."""

from intentrec.data.readers import FORMATS, read_dataset
from intentrec.data.schema import Dataset, make_dataset
from intentrec.data.textio import BadRows, DataFormatError

__all__ = ["FORMATS", "BadRows", "DataFormatError", "Dataset", "make_dataset", "read_dataset"]
