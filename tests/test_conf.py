"""conf/ itself: composed configs build what the pasted ones built, and every file is used."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conf_describe import describe
from helpers import ROOT, compose_option

CONF = ROOT / "conf"
# What every config built before conf/ composed its mixed defenses from per-attack parts.
BEFORE = json.loads((ROOT / "tests" / "fixtures" / "conf_objects.json").read_text())
# Deleted on purpose: superseded by pgd_spatial_uae (robust), a failed attempt (robust_l0), an
# unmeasured sibling of robust (pgd_spatial_jsma); docs/results.md keeps what they measured.
DELETED = {"robust", "robust_l0", "pgd_spatial_jsma"}
# defense=none builds the base class, which already trains on the clean batch (NoDefense, an
# empty subclass of it, is gone).
RENAMED = {"advdefense.defenses.base.NoDefense": "advdefense.defenses.base.TrainingDefense",
           "advdefense.defenses.NoDefense": "advdefense.defenses.TrainingDefense"}


def _renamed(data):
    if isinstance(data, dict):
        return {k: RENAMED.get(v, v) if k == "class" else _renamed(v) for k, v in data.items()}
    return [_renamed(v) for v in data] if isinstance(data, list) else data


def _built(group: str, option: str):
    from hydra.utils import instantiate

    return describe(instantiate(compose_option(group, option)))


@pytest.mark.parametrize("name", sorted(BEFORE["defense"]))
def test_every_defense_builds_what_it_built_before(name):
    if name in DELETED:
        assert not (CONF / "defense" / f"{name}.yaml").exists()
        return
    assert _built("defense", name) == _renamed(BEFORE["defense"][name])


def test_new_defense_parts_build_the_parts_the_mixed_defenses_pasted():
    parts = BEFORE["defense"]["pgd_spatial_uae"]["defenses"]
    assert [_built("defense", n) for n in ("pgd", "spatial", "spatial_uae_20x20")] == parts


def test_the_adversarial_stacker_trains_with_the_same_defense():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": compose_option("model", "stacker_adv_mean")})
    # model configs are @package _global_: compose_option returns the whole config's "model"
    assert describe(instantiate(cfg.model.defense)) == BEFORE["model_defense"]["stacker_adv_mean"]


def test_the_grids_attacks_build_what_they_built_before():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        attacks = compose("evaluate").eval.attacks
    GlobalHydra.instance().clear()
    assert sorted(attacks) == sorted(BEFORE["eval_attacks"])
    for name, cfg in attacks.items():
        assert describe(instantiate(cfg)) == _changed_on_purpose(name, BEFORE["eval_attacks"][name]), name


def _changed_on_purpose(name: str, before: dict) -> dict:
    """Two attack changes that were meant: sparse PGD runs on PGD's loop and no longer carries
    PGD's dummy ``eps=1.0, alpha=1.0``; Sparse-RS advances 2,048 images per chunk (was 256)."""
    before = dict(before)
    if name.startswith("sparse_pgd"):
        before.pop("eps", None), before.pop("alpha", None)
    if name.startswith("sparse_rs"):
        before["batch_size"] = 2048
    return before


# The old resolved configs (tests/fixtures/conf_resolved_before.json): every value they set is
# still set, except the options removed because they never changed a result.
RESOLVED = json.loads((ROOT / "tests" / "fixtures" / "conf_resolved_before.json").read_text())
REMOVED = {("fgsm", "seed"), ("jsma", "seed"), ("jsma_target", "seed"), ("jsma_k10", "seed"),
           ("jsma_k20", "seed"),
           # changed on purpose: Sparse-RS chunks of 2,048 images (was 256)
           ("sparse_rs_k10", "batch_size"), ("sparse_rs_k20", "batch_size")}


def _leaves(node, path=()):
    """(path, value) of every leaf; a mixed defense's parts and weights by position."""
    if isinstance(node, dict):
        node = {k: list(v.values()) if k in ("defenses", "weights") and isinstance(v, dict) else v
                for k, v in node.items()}
        return {leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))}
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return {leaf for i, v in enumerate(node) for leaf in _leaves(v, (*path, i))}
    return {(path, json.dumps(RENAMED.get(node, node) if isinstance(node, str) else node))}


def test_composed_configs_still_set_every_value_the_pasted_ones_set():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        now = {"defense": {}, "eval_attacks": OmegaConf.to_container(
            compose("evaluate").eval.attacks, resolve=True)}
        for name in set(RESOLVED["defense"]) - DELETED:
            now["defense"][name] = OmegaConf.to_container(
                compose("train", [f"defense={name}"]).defense, resolve=True)
        now["model_defense"] = {"stacker_adv_mean": OmegaConf.to_container(
            compose("train", ["model=stacker_adv_mean"]).model.defense, resolve=True)}
    GlobalHydra.instance().clear()
    for group, configs in now.items():
        for name, cfg in configs.items():
            missing = _leaves(RESOLVED[group][name]) - _leaves(cfg)
            missing = {(p, v) for p, v in missing if (name, p[-1]) not in REMOVED}
            assert not missing, f"{group} {name} no longer sets {sorted(missing)}"


def _option(group: str, entry: str) -> str:
    """``conf``-relative path (no suffix) of a defaults-list entry of a config in ``group``."""
    entry = entry.removeprefix("optional ").split("@")[0].strip()
    return entry.lstrip("/") if entry.startswith("/") else f"{group}/{entry}".lstrip("/")


def default_list_uses() -> set[str]:
    """Configs named by a defaults list, an experiment's pipeline (members' preprocessing and
    defense, ensembles) or an override string (``model=ablation``) inside conf/."""
    used: set[str] = set()
    for path in CONF.rglob("*.yaml"):
        group = path.parent.relative_to(CONF).as_posix().replace(".", "")
        data = yaml.safe_load(path.read_text()) or {}
        for entry in data.get("defaults", []):
            if isinstance(entry, dict):  # a group: {"optional /group@package": option}
                ((key, option),) = entry.items()
                if option is not None:
                    used.add(f"{_option(group, key)}/{option}")
            elif entry != "_self_":  # a config of the same group (or /group/option)
                used.add(_option(group, entry))
        pipeline = data.get("pipeline") or {}
        for member in pipeline.get("members") or []:
            used |= {f"preprocess/{member['preprocess']}", f"defense/{member['defense']}"}
        used |= {f"model/{m}" for m in pipeline.get("ensembles") or []}
        for override in _strings(pipeline):
            used |= {f"{g}/{o}" for g, o in re.findall(r"^([a-z_/]+)=(\w+)$", override)}
    return used


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def command_uses() -> set[str]:
    """``group=option`` overrides in README.md and tests/, and whole groups a test composes
    file by file (``(... / "conf" / "defense").glob("*.yaml")``)."""
    texts = [(ROOT / "README.md").read_text()]
    texts += [p.read_text() for p in (ROOT / "tests").rglob("*.py")]
    used: set[str] = set()
    for text in texts:
        used |= {f"{g}/{o}" for g, o in re.findall(r"\b([a-z_]+(?:/[a-z_]+)?)=(\w+)", text)}
        for group in re.findall(r'"conf" / "([\w/]+)"\)\.glob\("\*\.yaml"\)', text):
            used |= {str(p.relative_to(CONF).with_suffix("")) for p in (CONF / group).glob("*.yaml")}
    return used


def test_every_config_file_is_used_by_a_default_list_a_test_or_the_readme():
    readme = (ROOT / "README.md").read_text()
    used = default_list_uses() | command_uses()
    unused = []
    for path in sorted(CONF.rglob("*.yaml")):
        name = str(path.relative_to(CONF).with_suffix(""))
        if "/" not in name:  # a primary config: its entry point is a README command
            ok = f"python {name}.py" in readme
        else:
            ok = name in used
        if not ok:
            unused.append(name)
    assert not unused, f"configs no default list, test or README command uses: {unused}"


def test_the_usage_check_sees_each_kind_of_reference():
    used = default_list_uses()
    assert {"attack/spatial", "attack/spatial_uae", "defense/pgd", "defense/spatial",
            "defense/spatial_uae_20x20", "model/stacker", "experiment/paper", "logger/csv",
            "logger/wandb", "model/stacker_adv_mean", "defense/pgd_spatial_uae",
            "model/ablation", "data/mnist67"} <= used
    assert "defense/none" in command_uses() and "hydra/launcher/slurm" in command_uses()


def test_linear_stacker_is_the_stacker_without_activation_under_its_own_name(tmp_path, data_dir):
    """``model=linear_stacker`` (the paper's authors' stacker) registers as linear_stacker."""
    from helpers import compose

    linear = compose("train", ["model=linear_stacker"], tmp_path, data_dir)
    stacker = compose("train", ["model=stacker"], tmp_path, data_dir)
    assert linear.name == "linear_stacker" and linear.model.activation == "linear"
    linear.model.activation = stacker.model.activation
    linear.name = stacker.name
    assert linear == stacker


def test_the_l0_mix_is_pgd_spatial_uae_plus_a_sparse_pgd_quarter():
    """defense=pgd_spatial_uae_l0: the three parts of pgd_spatial_uae, then sparse PGD at k = 20,
    a quarter of each batch each (benchmarks/bench_l0_training.py measured it)."""
    l0 = _built("defense", "pgd_spatial_uae_l0")
    base = _built("defense", "pgd_spatial_uae")
    assert l0["defenses"][:3] == base["defenses"]
    sparse = l0["defenses"][3]
    assert sparse["attack"]["class"].endswith("SparsePGD") and sparse["attack"]["k"] == 20
    assert _built("defense", "sparse_pgd20") == sparse


def test_the_k30_mix_differs_from_the_l0_mix_only_in_the_sparse_budget():
    """defense=pgd_spatial_uae_l0k30: the same four parts and weights, sparse PGD at k = 30."""
    k30 = _built("defense", "pgd_spatial_uae_l0k30")
    l0 = _built("defense", "pgd_spatial_uae_l0")
    assert k30["defenses"][:3] == l0["defenses"][:3]
    assert k30["defenses"][3]["attack"]["k"] == 30
    k30["defenses"][3]["attack"]["k"] = 20
    assert k30 == l0


def test_the_k40_mix_differs_from_the_k30_mix_only_in_the_sparse_budget():
    """defense=pgd_spatial_uae_l0k40 (experiment=robust's third member): sparse PGD at k = 40."""
    k40 = _built("defense", "pgd_spatial_uae_l0k40")
    k30 = _built("defense", "pgd_spatial_uae_l0k30")
    assert k40["defenses"][3]["attack"]["k"] == 40
    k40["defenses"][3]["attack"]["k"] = 30
    assert k40 == k30
