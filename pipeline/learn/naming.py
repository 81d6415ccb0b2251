"""Row names: the paper-style name of what a configuration computed ("SO+MaxExp", "TO (no EPN)",
"first-order (mean)"), used by every table and ledger record."""
from __future__ import annotations

from pipeline.extract.settings import ExtractConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.pooling.settings import DescriptorConfig

EPN_NAMES = {"none": "no EPN", "maxexp": "MaxExp", "gamma": "Gamma", "asinhe": "AsinhE",
             "sigme": "SigmE", "hdp": "HDP"}


def pooling_choices(dcfg: DescriptorConfig) -> list[str]:
    """The stage-2 choices that change a row's number and differ from the defaults, as a row
    name states them: the EPN parameters ("eta=5"), the spectrum normalisation ("kappa norm":
    the slides; the default "sum" is the supplement's), the covariance form (docs/method.md,
    "EPN"), at second and third order; the feature layout ("layout=features") at any order."""
    from pipeline.pooling.epn import EPN
    out = []
    if dcfg.order > 1 and dcfg.epn != "none":
        defaults = EPN[dcfg.epn].defaults
        out += [f"{k}={v}" for k, v in sorted(dcfg.epn_params.items()) if v != defaults.get(k)]
        if dcfg.spectrum_norm != DescriptorConfig.spectrum_norm:
            out.append(f"{dcfg.spectrum_norm} norm")
    if dcfg.order > 1 and dcfg.center:
        out.append("covariance")
    if dcfg.layout != DescriptorConfig.layout:
        out.append(f"layout={dcfg.layout}")
    return out


def method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig | None = None) -> str:
    """The paper-style row name: "SO+MaxExp", "TO (no EPN)", "first-order (mean)", with every
    non-default EPN parameter and normalisation ("SO+MaxExp (eta=5, kappa norm)",
    pooling_choices; "first-order (mean, layout=features)"), and the head when it is not the
    SVM; EvaluateConfig.name overrides it."""
    if cfg is not None and cfg.name:
        return cfg.name
    if dcfg.order == 1:
        name = f"first-order ({', '.join([dcfg.first_order, *pooling_choices(dcfg)])})"
    else:
        order = {2: "SO", 3: "TO"}[dcfg.order]
        name = f"{order} (no EPN)" if dcfg.epn == "none" else f"{order}+{EPN_NAMES[dcfg.epn]}"
        choices = pooling_choices(dcfg)
        if choices:
            name += f" ({', '.join(choices)})"
    if cfg is not None and cfg.idt == "only":
        return "IDT (Fisher vectors)"
    if cfg is not None and cfg.idt == "on":
        name += "+IDT"
    if cfg is not None and cfg.head != "svm":
        name += f" [{cfg.head}]"
    return name
