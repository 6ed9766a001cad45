"""deepclust.runtime: score data with a model bundle using onnxruntime and FAISS (no torch).

The bundle format is defined here (:mod:`.bundle`), once; the trainer writes bundles through it.
"""

from .assigner import Assigner, Assignment
from .bundle import Bundle, InputSpec, Manifest, load_bundle, write_bundle
from .errors import BundleError, DeepclustError, InputError
from .preprocessing import Preprocessing
from .readers import open_inputs, open_reader
from .scoring import Interrupted, ScoringReport, score_file
from .writers import ResultWriter

__all__ = [
    "Assigner", "Assignment", "Bundle", "BundleError", "DeepclustError", "InputError", "InputSpec",
    "Interrupted", "Manifest", "Preprocessing", "ResultWriter", "ScoringReport", "load_bundle", "open_inputs",
    "open_reader",
    "score_file", "write_bundle",
]
