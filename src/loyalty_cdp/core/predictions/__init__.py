"""Buy-till-you-die predictions: BG/NBD, Pareto/NBD, Gamma-Gamma spend, CLV (pure, vectorised)."""

from loyalty_cdp.core.predictions.bgnbd import BgNbdModel, bgnbd_log_likelihood, fit_bgnbd
from loyalty_cdp.core.predictions.clv import PurchaseModel, customer_lifetime_value
from loyalty_cdp.core.predictions.gamma_gamma import (
    GammaGammaModel,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)
from loyalty_cdp.core.predictions.pareto_nbd import (
    ParetoNbdModel,
    fit_pareto_nbd,
    pareto_nbd_log_likelihood,
)
from loyalty_cdp.core.predictions.summary import PurchaseSummary, check_rfm, summarise_purchases

__all__ = [
    "BgNbdModel",
    "GammaGammaModel",
    "ParetoNbdModel",
    "PurchaseModel",
    "PurchaseSummary",
    "bgnbd_log_likelihood",
    "check_rfm",
    "customer_lifetime_value",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_pareto_nbd",
    "gamma_gamma_log_likelihood",
    "pareto_nbd_log_likelihood",
    "summarise_purchases",
]
