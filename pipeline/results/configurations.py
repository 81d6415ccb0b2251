"""The configurations of a dataset as the ledger records them: one per configuration key, with
its records per split, the settings that tell it apart from the others, its family of rows, and
the sweeps over one setting with every other held fixed."""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.core.cache import canonical
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.datasets import DATASETS, DatasetError
from pipeline.pooling.epn import EPN
from pipeline.learn.naming import EPN_NAMES
from pipeline.results.ledger import latest
from pipeline.results.tables import natural_key

log = logging.getLogger(__name__)

SECTIONS = {"extract": ExtractConfig, "descriptors": DescriptorConfig,
            "evaluate": EvaluateConfig, "train": TrainConfig}


SELECTING = {"dataset_options", "parts", "groups"}


IGNORED = {f"{section}.{f.name}" for section, cls in SECTIONS.items()
           for f in dataclasses.fields(cls)
           if not f.metadata.get("key", True) and f.name not in SELECTING}


def dataset_identity(ecfg: ExtractConfig) -> str:
    """The folder name of the dataset's caches (`Dataset.identity`), without building the dataset
    (building the synthetic one would generate it): the registered name, or "folder-<name>"."""
    key = ecfg.dataset.lower()
    if key not in DATASETS:
        raise DatasetError(f"dataset={ecfg.dataset!r} is unknown; choose one of {sorted(DATASETS)}")
    cls = DATASETS[key]
    if cls.name != "folder":
        return cls.name
    name = ecfg.dataset_options.get("name")
    if not name and ecfg.root is None:
        raise DatasetError("dataset=folder: give root= (or dataset_options={'name': ...}) to name "
                           "the dataset whose report to make")
    return f"folder-{name or Path(ecfg.root).expanduser().resolve().name}"


@dataclasses.dataclass
class Configuration:
    """One configuration's latest record per split, with its mean score over those splits."""

    key: str
    records: list[dict]

    @property
    def config(self) -> dict:
        return self.records[-1]["config"]

    @property
    def method(self) -> str:
        return str(self.records[-1]["method"])

    @property
    def mean(self) -> float:
        return float(np.mean([r["score"] for r in self.records]))

    @property
    def cache(self) -> dict:
        return dict(self.records[-1].get("cache") or {})

    @property
    def attention(self) -> str | None:
        """The trained attention (train records), None for an evaluated descriptor."""
        return (self.config.get("train") or {}).get("attention")


def configurations(records: list[dict]) -> list[Configuration]:
    """The ledger's records grouped per configuration (config_key), latest record per split,
    splits in natural order, configurations in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in latest(records):
        groups.setdefault(r["config_key"], []).append(r)
    return [Configuration(key, sorted(recs, key=lambda r: natural_key(r["split"])))
            for key, recs in groups.items()]


def best(configs: list[Configuration]) -> Configuration:
    """The highest mean score among the configurations scored on the most splits (a row that
    lacks splits cannot win on a lucky subset); the earliest on a tie."""
    most = max(len(c.records) for c in configs)
    return max((c for c in configs if len(c.records) == most), key=lambda c: c.mean)


def settings(config: dict) -> dict[str, str]:
    """"section.field" -> canonical JSON of its value, for the fields that change a result; EPN
    parameters with their defaults filled in ({} and {"eta": "N"} are the same MaxExp)."""
    out = {f"{section}.{name}": json.dumps(canonical(value), sort_keys=True)
           for section, fields in config.items() if isinstance(fields, dict)
           for name, value in fields.items() if f"{section}.{name}" not in IGNORED}
    if config.get("descriptors", {}).get("epn") in EPN:
        out["descriptors.epn_params"] = json.dumps(canonical(_epn_params(config)), sort_keys=True)
    return out


def family(config: dict) -> str:
    """A paper-style name of a configuration's kind, without the swept values: "SO+MaxExp",
    "TO (no EPN)+IDT", "first-order", with the head or the trained attention."""
    d, v, t = config.get("descriptors", {}), config.get("evaluate", {}), config.get("train")
    order = d.get("order", 2)
    if order == 1:
        name = "first-order"
    else:
        name = {2: "SO", 3: "TO"}.get(order, f"order {order}")
        epn = d.get("epn")
        name += " (no EPN)" if epn == "none" else f"+{EPN_NAMES.get(epn, epn)}"
    if t:
        return name + ("+Att" if t.get("attention") == "hot" else f" [{t.get('attention')}]")
    if v.get("idt") == "only":
        return "IDT (Fisher vectors)"
    name += "+IDT" if v.get("idt") == "on" else ""
    return name + (f" [{v['head']}]" if v.get("head", "svm") != "svm" else "")


def _flat(other: dict[str, str]) -> dict[str, str]:
    """Settings with dict values spread into one entry per key ("extract.dataset_options.seed")."""
    out = {}
    for key, text in other.items():
        value = json.loads(text)
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": json.dumps(v, sort_keys=True) for k, v in value.items()})
        else:
            out[key] = text
    return out


def sweep_lines(configs: list[Configuration], value: Callable[[dict], Any],
                swept: Callable[[dict], dict[str, str]]) -> dict[str, list[Configuration]]:
    """Line label -> the configurations of one sweep line: configurations whose other settings
    (`swept(config)`: their settings without the swept one) are equal form a line, kept when it
    holds at least two values of `value(config)`. Labels: the family ("SO+MaxExp"), plus the
    settings in which lines of the same family differ ("seed=1")."""
    groups: dict[str, list[Configuration]] = {}
    others: dict[str, dict[str, str]] = {}
    for c in configs:
        other = swept(c.config)
        sig = json.dumps(other, sort_keys=True)
        groups.setdefault(sig, []).append(c)
        others[sig] = _flat(other)
    lines = {sig: cs for sig, cs in groups.items()
             if len({json.dumps(canonical(value(c.config))) for c in cs}) >= 2}
    families: dict[str, list[str]] = {}
    for sig, cs in lines.items():
        families.setdefault(family(cs[0].config), []).append(sig)
    out: dict[str, list[Configuration]] = {}
    for name, sigs in families.items():
        fields = sorted({k for sig in sigs for k in others[sig]})
        differ = [k for k in fields if len({others[sig].get(k) for sig in sigs}) > 1]
        for sig in sigs:
            shown = [f"{k.split('.')[-1]}={others[sig][k]}" for k in differ if k in others[sig]]
            label = name + (f" ({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''})"
                            if shown else "")
            while label in out:
                label += "'"
            out[label] = lines[sig]
    return out


def newest(configs: list[Configuration]) -> list[Configuration]:
    """One configuration per set of settings: the most recently recorded, where a rerun under
    another stage version or with edited splits gave the same settings a new config key."""
    out: dict[str, Configuration] = {}
    for c in sorted(configs, key=lambda c: max(r.get("id", 0) for r in c.records)):
        out[json.dumps(settings(c.config), sort_keys=True)] = c
    kept = {id(c) for c in out.values()}
    return [c for c in configs if id(c) in kept]


def _epn_params(config: dict) -> dict:
    d = config["descriptors"]
    return {**EPN[d["epn"]].defaults, **(d.get("epn_params") or {})}


def _without(config: dict, field: str, replace: Any = None) -> dict[str, str]:
    out = settings(config)
    out.pop(field, None)
    if replace is not None:
        out[field] = json.dumps(canonical(replace), sort_keys=True)
    return out


def _numeric(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def trained_models(configs: list[Configuration]) -> dict[str, Configuration]:
    """Attention kind -> its best trained configuration whose weights are still on disk."""
    kinds: dict[str, list[Configuration]] = defaultdict(list)
    for c in configs:
        if c.attention and c.attention != "none" and c.cache.get("train"):
            kinds[c.attention].append(c)
    return {kind: best(cs) for kind, cs in sorted(kinds.items(), key=lambda kv: kv[0] != "hot")}
