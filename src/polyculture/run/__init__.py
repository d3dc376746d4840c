"""run: study files, the run store and the study runner."""

from polyculture.run.budget import BudgetResult, run_budget
from polyculture.run.results import RunResults, load_run
from polyculture.run.runner import assemble_tables, run_study, run_suite
from polyculture.run.store import RunStore
from polyculture.run.study import BUILTIN_STUDIES, MemberPlan, Study, ZooEntry, expand, load_study

__all__ = [
    "BUILTIN_STUDIES",
    "BudgetResult",
    "MemberPlan",
    "RunResults",
    "RunStore",
    "Study",
    "ZooEntry",
    "assemble_tables",
    "expand",
    "load_run",
    "load_study",
    "run_budget",
    "run_study",
    "run_suite",
]
