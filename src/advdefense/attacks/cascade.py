"""A cascade of attacks, each run only on the images still robust (AutoAttack's scheme).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690: the reported robust
accuracy is the per-example worst case over the attacks; running each attack only on the
points the earlier ones did not fool gives that worst case at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from advdefense.attacks.base import Attack, AttackResult, eval_mode, predict, standard_layout
from advdefense.attacks.threat import Gradient, Queries, ThreatModel, threat_model_of
from advdefense.checks import ConfigError, check_images, check_labels


class Cascade(Attack):
    """Run ``attacks`` in order; each sees only the images no earlier attack fooled.

    The model first classifies the clean images (one query each); misclassified ones are
    returned unchanged. Then attack ``k`` runs on the images still classified correctly,
    and the examples it fools leave the cascade with that attack's image. Per example the
    result is the first fooling image, or the last attack's image where none fooled: the
    model's accuracy on the result is the per-example worst case over the attacks (an
    example counts as robust only if every attack failed on it).

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.

    Args:
        attacks: the attacks in order, as a sequence or a mapping ``name -> attack`` (the
            names appear in logs only; order is the mapping's order). Each must return an
            ``AttackResult`` from ``run`` (every attack of this package does).
        eps: the L-infinity radius every member must share (their ``eps`` attribute), or
            None for no check (e.g. members of different threat models).
        batch_size, progress, seed: kept for the common interface; each member uses its own.

    ``result.queries``: the clean query plus every member's queries, per example.
    ``result.info["fooled_by"]``: (N,) int64, the position of the attack that fooled the
    example, -1 where none did (robust, or misclassified before any attack: ``success``
    tells which).
    """

    name = "cascade"

    def __init__(self, attacks: Sequence[Attack] | Mapping[str, Attack], eps: float | None = None,
                 batch_size: int = 256, progress: bool = False, seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        items = list(attacks.items()) if isinstance(attacks, Mapping) else \
            [(getattr(a, "name", type(a).__name__), a) for a in attacks]
        if not items:
            raise ConfigError("attack.attacks", [], "a non-empty list of attacks")
        for key, attack in items:
            if not callable(getattr(attack, "run", None)):
                raise ConfigError(f"attack.attacks.{key}", attack,
                                  "an attack with run(model, images, labels) -> AttackResult")
            member_eps = getattr(attack, "eps", None)
            if eps is not None and member_eps is not None and float(member_eps) != float(eps):
                raise ConfigError(f"attack.attacks.{key}.eps", member_eps,
                                  f"the cascade's eps {eps} (every member shares one threat model)")
        self.names = [str(k) for k, _ in items]
        self.attacks = [a for _, a in items]
        self.eps = None if eps is None else float(eps)

    def scaled(self, steps: int = 1, restarts: int = 1, seed: int = 0) -> Cascade:
        """The cascade with every member that supports it scaled (see ``APGD.scaled``)."""
        members = {name: a.scaled(steps, restarts, seed) if hasattr(a, "scaled") else a
                   for name, a in zip(self.names, self.attacks, strict=True)}
        return Cascade(members, self.eps, self.batch_size, self.progress, self.seed)

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
            need_success: bool = True) -> AttackResult:
        """Attack ``images`` (N, 1, 28, 28) in [0, 1] with ``labels`` (N,); see the class."""
        check_images(images)
        check_labels(labels, images.shape[0])
        n = len(images)
        out = images.detach().clone()
        queries = torch.ones(n, dtype=torch.int64, device=images.device)
        fooled_by = torch.full((n,), -1, dtype=torch.int64, device=images.device)
        with eval_mode(model):
            robust = predict(model, images) == labels
            for k, attack in enumerate(self.attacks):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                result = attack.run(model, images[idx], labels[idx])
                success = result.success
                if success is None:  # an attack that does not report it: one more query
                    success = predict(model, result.images) != labels[idx]
                    queries[idx] += 1
                queries[idx] += result.queries.to(queries.device)
                out[idx] = result.images.to(out.dtype)
                fooled_by[idx[success]] = k
                robust[idx[success]] = False
        return AttackResult(standard_layout(out), ~robust, queries, {"fooled_by": fooled_by})

    @property
    def threat_model(self) -> ThreatModel | None:
        """The members' common perturbation set, with gradient access if any member uses
        gradients (else the members' summed query budgets); None when the sets differ (an
        undeclared row counts in every worst case)."""
        models = [threat_model_of(a) for a in self.attacks]
        if any(m is None for m in models) or len({m.perturbation for m in models}) != 1:
            return None
        if all(m.query_only for m in models):
            return ThreatModel(models[0].perturbation,
                               Queries(sum(m.access.budget for m in models)))
        return ThreatModel(models[0].perturbation, Gradient())

