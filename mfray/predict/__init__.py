"""Score new molecules with a trained model (``mfray predict``): :mod:`mfray.predict.model` loads a
model (one checkpoint or an exported ensemble, with the LF model it reads), :mod:`mfray.predict.stream`
scores a file of SMILES chunk by chunk in bounded memory, in this process or on Ray Data."""

from mfray.predict.model import Predictor, Scores, load_predictor
from mfray.predict.stream import PredictSummary, predict_file

__all__ = ["PredictSummary", "Predictor", "Scores", "load_predictor", "predict_file"]
