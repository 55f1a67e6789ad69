"""Run summaries and their tables (mean +- std per recipe beside the paper's top-1, finite values counted)."""
from .summaries import FORMATS, Row, collect, format_rows, group, mean_std, plus_minus

__all__ = ['FORMATS', 'Row', 'collect', 'format_rows', 'group', 'mean_std', 'plus_minus']
