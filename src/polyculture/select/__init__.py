"""select: choosing, combining and shipping members."""

from polyculture.select.budget import (
    Allocation,
    Evaluation,
    Outcome,
    successive_halving,
    uniform_allocation,
    uniform_epochs,
)
from polyculture.select.ensemble import compare_to_single, greedy_ensemble, soft_vote
from polyculture.select.export import (
    ExportError,
    ExportReport,
    QuantizationReport,
    export_onnx,
    onnx_logits,
    quantize_onnx,
    require_export_extra,
)
from polyculture.select.incumbents import choose_against_incumbents
from polyculture.select.pareto import pareto_front
from polyculture.select.scenario import Scenario, feasible, load_scenario, recommend

__all__ = [
    "Allocation",
    "Evaluation",
    "ExportError",
    "ExportReport",
    "Outcome",
    "QuantizationReport",
    "Scenario",
    "choose_against_incumbents",
    "compare_to_single",
    "export_onnx",
    "feasible",
    "greedy_ensemble",
    "load_scenario",
    "onnx_logits",
    "pareto_front",
    "quantize_onnx",
    "recommend",
    "require_export_extra",
    "soft_vote",
    "successive_halving",
    "uniform_allocation",
    "uniform_epochs",
]
