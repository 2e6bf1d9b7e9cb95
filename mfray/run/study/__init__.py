"""Studies: tasks x settings x strategies x search space x split seeds x budget, on Ray.

``spec`` (the StudySpec), ``space`` (the define-by-run search space), ``plan`` (steps and their content
keys), ``status`` (what is done) import no Ray; ``runner`` and ``trial`` use Ray when they run.
"""

from mfray.run.study.plan import StudyPlan, make_plan
from mfray.run.study.spec import StudySpec, load_study, parse_study

__all__ = ["StudyPlan", "StudySpec", "load_study", "make_plan", "parse_study"]
