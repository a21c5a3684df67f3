"""The servable artifact: a self-contained model folder that `export` writes and `serve` reads.

Its serving spec (``serving.json``), reading and writing it, the model card, and the export of a
trained point's model folder.
"""

from servable.card import TENANT_WARNING, deployment_line, model_card
from servable.export import PointSources, export_servable, make_servable
from servable.graph import GRAPH_FILE, checked_graph
from servable.spec import SERVING_FILE, ServingSpec, load_tokenizer, read_servable

__all__ = [
    "GRAPH_FILE",
    "SERVING_FILE",
    "TENANT_WARNING",
    "PointSources",
    "ServingSpec",
    "checked_graph",
    "deployment_line",
    "export_servable",
    "load_tokenizer",
    "make_servable",
    "model_card",
    "read_servable",
]
