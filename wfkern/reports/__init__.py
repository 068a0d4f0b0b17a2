"""Reports: Table 1 / Table 2 in Markdown and self-contained HTML, and PNG figures, from evaluation results."""

from .figures import plot_insertion_deletion, plot_per_class_accuracy, plot_relations, plot_untraining
from .history import read_history
from .report import align_classes, load_results, restrict_classes, write_report
from .tables import (gap_table, gaps, mia_at_chance, mia_verdict, per_class_table, reference_method, table1, table2,
                     to_html, to_markdown)

__all__ = [
    "align_classes", "gap_table", "gaps", "load_results", "mia_at_chance", "mia_verdict", "per_class_table",
    "plot_insertion_deletion", "plot_per_class_accuracy", "plot_relations", "plot_untraining", "read_history",
    "reference_method", "restrict_classes", "table1", "table2", "to_html", "to_markdown", "write_report",
]
