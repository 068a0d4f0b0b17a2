"""Reports: Table 1 / Table 2 in Markdown and self-contained HTML, and PNG figures, from evaluation results."""

from .figures import plot_insertion_deletion, plot_per_class_accuracy, plot_relations
from .report import load_results, write_report
from .tables import per_class_table, table1, table2, to_html, to_markdown

__all__ = [
    "load_results", "per_class_table", "plot_insertion_deletion", "plot_per_class_accuracy", "plot_relations",
    "table1", "table2", "to_html", "to_markdown", "write_report",
]
