"""measure: pure functions over arrays.

Performance and calibration (:mod:`.performance`), bootstrap statistics (:mod:`.statistics`),
paired tests (:mod:`.paired`), representational similarity (:mod:`.similarity`), functional
agreement (:mod:`.agreement`), outcome homogenization (:mod:`.homogenization`) and ensemble
diversity (:mod:`.diversity`). Inputs are NumPy arrays or torch tensors (computed on their device);
bad inputs raise :class:`~polyculture.errors.MeasureInputError`.
"""

from polyculture.measure.agreement import (
    ErrorConsistency,
    SameWrong,
    cohen_kappa,
    disagreement,
    error_consistency,
    pairwise_agreement,
    same_wrong_rate,
)
from polyculture.measure.diversity import (
    coincident_failure_diversity,
    correlation,
    difficulty,
    disagreement_measure,
    diversity_report,
    double_fault,
    entropy_measure,
    generalized_diversity,
    interrater_agreement,
    kohavi_wolpert_variance,
    q_statistic,
)
from polyculture.measure.homogenization import (
    FailureCountDistribution,
    Homogenization,
    SystemicFailure,
    failure_count_distribution,
    homogenization,
    poisson_binomial_pmf,
    systemic_failure,
)
from polyculture.measure.paired import mcnemar, paired_bootstrap
from polyculture.measure.performance import (
    METRICS,
    accuracy,
    brier,
    classification_metrics,
    expected_calibration_error,
    macro_f1,
    nll,
)
from polyculture.measure.similarity import (
    StreamingCKA,
    linear_cka,
    mutual_knn,
    procrustes_distance,
    pwcca,
    rbf_cka,
    rsa,
    svcca,
)
from polyculture.measure.statistics import bootstrap_ci, bootstrap_mean_ci

__all__ = [
    "METRICS",
    "ErrorConsistency",
    "FailureCountDistribution",
    "Homogenization",
    "SameWrong",
    "StreamingCKA",
    "SystemicFailure",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "brier",
    "classification_metrics",
    "cohen_kappa",
    "coincident_failure_diversity",
    "correlation",
    "difficulty",
    "disagreement",
    "disagreement_measure",
    "diversity_report",
    "double_fault",
    "entropy_measure",
    "error_consistency",
    "expected_calibration_error",
    "failure_count_distribution",
    "generalized_diversity",
    "homogenization",
    "interrater_agreement",
    "kohavi_wolpert_variance",
    "linear_cka",
    "macro_f1",
    "mcnemar",
    "mutual_knn",
    "nll",
    "paired_bootstrap",
    "pairwise_agreement",
    "poisson_binomial_pmf",
    "procrustes_distance",
    "pwcca",
    "q_statistic",
    "rbf_cka",
    "rsa",
    "same_wrong_rate",
    "svcca",
    "systemic_failure",
]
