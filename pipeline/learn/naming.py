"""Row names: the paper-style name of what a configuration computed ("SO+MaxExp", "TO (no EPN)",
"first-order (mean)"), used by every table and ledger record."""
from __future__ import annotations

from pipeline.extract.settings import ExtractConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.pooling.settings import DescriptorConfig

EPN_NAMES = {"none": "no EPN", "maxexp": "MaxExp", "gamma": "Gamma", "asinhe": "AsinhE",
             "sigme": "SigmE", "hdp": "HDP"}


def method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig | None = None) -> str:
    """The paper-style row name: "SO+MaxExp", "TO (no EPN)", "first-order (mean)", with the head
    when it is not the SVM; EvaluateConfig.name overrides it."""
    if cfg is not None and cfg.name:
        return cfg.name
    if dcfg.order == 1:
        name = f"first-order ({dcfg.first_order})"
    else:
        order = {2: "SO", 3: "TO"}[dcfg.order]
        name = f"{order} (no EPN)" if dcfg.epn == "none" else f"{order}+{EPN_NAMES[dcfg.epn]}"
    if cfg is not None and cfg.idt == "only":
        return "IDT (Fisher vectors)"
    if cfg is not None and cfg.idt == "on":
        name += "+IDT"
    if cfg is not None and cfg.head != "svm":
        name += f" [{cfg.head}]"
    return name
