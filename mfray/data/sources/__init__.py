"""Data sources: local files, PubChem MF-PCBA pairs, QMugs. See :mod:`mfray.data.sources.base`."""

from mfray.data.sources.base import SOURCES, Source, artifact_column, build_source, label_column

__all__ = ["SOURCES", "Source", "artifact_column", "build_source", "label_column"]
