"""Predictions (pure, vectorised): BG/NBD, Pareto/NBD, Gamma-Gamma spend, CLV, lapse risk, replenishment,
cross-sell, and one whole scoring run with its reasons."""

from loyalty_cdp.core.predictions.alerts import lapse_risk_call
from loyalty_cdp.core.predictions.bgnbd import BgNbdModel, bgnbd_log_likelihood, fit_bgnbd
from loyalty_cdp.core.predictions.clv import PurchaseModel, customer_lifetime_value
from loyalty_cdp.core.predictions.crosssell import (
    CrossSellConfig,
    CrossSellModel,
    Recommendations,
    fit_cross_sell,
    recommend_members,
    recommend_popular,
)
from loyalty_cdp.core.predictions.explain import explain_scores
from loyalty_cdp.core.predictions.gamma_gamma import (
    GammaGammaModel,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)
from loyalty_cdp.core.predictions.history import HistoryBuilder, PurchaseHistory
from loyalty_cdp.core.predictions.lapse import lapse_risk, upward_crossings, usual_interval_days
from loyalty_cdp.core.predictions.pareto_nbd import (
    ParetoNbdModel,
    fit_pareto_nbd,
    pareto_nbd_log_likelihood,
)
from loyalty_cdp.core.predictions.personas import PersonaConfig, assign_personas, persona_signals
from loyalty_cdp.core.predictions.propensity import PropensityModel, category_rows, fit_propensity
from loyalty_cdp.core.predictions.replenishment import (
    ReplenishmentConfig,
    ReplenishmentPredictions,
    last_interval_baseline,
    predict_replenishment,
)
from loyalty_cdp.core.predictions.run import ScoringRun, score_history
from loyalty_cdp.core.predictions.scoring import (
    MemberScores,
    ScoringConfig,
    ScoringModels,
    fit_scoring_models,
    score_summary,
)
from loyalty_cdp.core.predictions.summary import PurchaseSummary, check_rfm, summarise_purchases

__all__ = [
    "BgNbdModel",
    "CrossSellConfig",
    "CrossSellModel",
    "GammaGammaModel",
    "HistoryBuilder",
    "MemberScores",
    "ParetoNbdModel",
    "PersonaConfig",
    "PropensityModel",
    "PurchaseHistory",
    "PurchaseModel",
    "PurchaseSummary",
    "Recommendations",
    "ReplenishmentConfig",
    "ReplenishmentPredictions",
    "ScoringConfig",
    "ScoringModels",
    "ScoringRun",
    "assign_personas",
    "bgnbd_log_likelihood",
    "category_rows",
    "check_rfm",
    "customer_lifetime_value",
    "explain_scores",
    "fit_bgnbd",
    "fit_cross_sell",
    "fit_gamma_gamma",
    "fit_pareto_nbd",
    "fit_propensity",
    "fit_scoring_models",
    "gamma_gamma_log_likelihood",
    "lapse_risk",
    "lapse_risk_call",
    "last_interval_baseline",
    "pareto_nbd_log_likelihood",
    "persona_signals",
    "predict_replenishment",
    "recommend_members",
    "recommend_popular",
    "score_history",
    "score_summary",
    "summarise_purchases",
    "upward_crossings",
    "usual_interval_days",
]
