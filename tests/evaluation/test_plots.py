"""The plots: at most MAX_SERIES lines per panel in distinct colours, n in every title, digits
(6 / 7) for predictions, a colour bar on difference maps, a readable confusion grid."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import pytest

from advdefense.evaluation import plots

MODELS = [f"{p}-{d}" for p in ("none", "blur", "squeeze") for d in ("none", "fgsm", "blackbox")]
MODELS += ["stacker", "vote", "mean"]
KINDS = {m: "ensemble" if "-" not in m else "member" for m in MODELS}


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves (still written to its file)."""
    saved, real = [], plots._save

    def keep(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def _eps_rows(models=MODELS, n=64):
    return [{"model": m, "attack": "fgsm", "threat": t, "eps": e, "accuracy": 1 - e, "n": n}
            for m in models for t in ("whitebox", "transfer") for e in (0.0, 0.1, 0.3, 1.0)]


def _check_panels(fig, most=plots.MAX_SERIES):
    axes = [ax for ax in fig.axes if ax.lines]
    for ax in axes:
        assert 0 < len(ax.get_legend().get_texts()) <= most
        colours = {(mcolors.to_hex(ln.get_color()), ln.get_linestyle()) for ln in ax.lines}
        assert len(colours) == len(ax.lines)  # no two lines look alike
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 <= ax.get_window_extent().y0  # below the axes, never over the data
    return axes


def test_family_and_panels():
    assert plots.family("blur-fgsm") == "blur" and plots.family("stacker") == "ensembles"
    wide = "none-pgd_spatial_uae_wide"
    assert plots.family(wide, {wide: "member"}) == "none"
    assert plots.family("my-head", {"my-head": "ensemble"}) == "ensembles"
    series = [(m, t) for m in MODELS for t in ("whitebox", "transfer")]
    parts = plots.panels(series, KINDS)
    assert [title for title, _ in parts] == ["blur-* members", "none-* members",
                                             "squeeze-* members", "ensembles"]
    assert sorted(s for _, p in parts for s in p) == sorted(series)
    # a family of 9 models x 2 threats: panels of at most 8, a model's lines kept together
    many = [(f"none-d{i}", t) for i in range(9) for t in ("whitebox", "transfer")]
    parts = plots.panels(many)
    assert [len(p) for _, p in parts] == [8, 8, 2] and parts[0][0] == "none-* members (1/3)"
    for _, p in parts:
        assert all(sum(m == mm for mm, _ in p) == 2 for m, _ in p)


def test_eps_plot_facets_by_family_with_n_in_title(tmp_path, figures):
    path = plots.plot_eps(_eps_rows(), "fgsm", tmp_path / "eps.png", KINDS)
    assert path.is_file()
    (fig,) = figures
    axes = _check_panels(fig)
    assert len(axes) == 4 and sum(len(ax.lines) for ax in axes) == 24
    assert "n=64" in fig._suptitle.get_text()
    assert plots.plot_eps(_eps_rows(), "pgd", tmp_path / "none.png") is None


def test_spatial_and_l0_plots_state_n(tmp_path, figures):
    few = ["none-none", "none-fgsm", "blur-none", "stacker"]
    rows = [{"model": m, "kind": k, "value": v, "n": 32, "accuracy": 0.5}
            for m in few for k in ("dx", "dy") for v in (-1, 0, 1)]
    plots.plot_spatial(rows, ("dx", "dy"), tmp_path / "shift.png", KINDS)
    curves = [{"model": m, "attack": "jsma", "threat": "whitebox", "n": 20,
               "fooled_l0": [3, 10, 50]} for m in few]
    plots.plot_l0(curves, "jsma", tmp_path / "l0.png", kinds=KINDS)
    for fig in figures:
        _check_panels(fig)
        assert "n=32" in fig._suptitle.get_text() or "n=20" in fig._suptitle.get_text()


def test_examples_show_digits_and_a_colour_bar(tmp_path, figures):
    originals = [[0.0] * 784, [1.0] * 784]
    cells = [{"model": "none-none", "attack": "fgsm", "threat": "whitebox", "pred": [1, 0],
              "examples": {"adv": [[0.3] * 784, [0.7] * 784]}}]
    plots.plot_examples(originals, cells, "fgsm", tmp_path / "ex.png", labels=[0, 1])
    (fig,) = figures
    titles = [ax.get_title() for ax in fig.axes]
    assert "adversarial: predicted 7" in titles and "adversarial: predicted 6" in titles
    assert "original: digit 6" in titles and "original: digit 7" in titles
    assert not any("pred 1" in t or "pred 0" in t for t in titles)
    assert len(fig.axes) == 2 * 3 + 2  # a colour bar beside each difference map
    assert "n=2" in fig._suptitle.get_text()


def test_confusion_grid_is_readable_at_report_size(tmp_path, figures):
    rows = [{"model": m, "attack": a, "threat": "all" if a == "worst_case" else "whitebox",
             "n": 200, "confusion": [[90, 10], [5, 95]]}
            for m in MODELS for a in ("none", "worst_case")]
    path = plots.plot_confusions(rows, tmp_path / "confusion.png")
    height, width = mpimg.imread(path).shape[:2]
    assert width <= 1100 and height >= 0.5 * width  # a grid, not a 1859 x 358 strip
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.texts]
    assert len(panels) == 24
    assert all(t.get_fontsize() >= 9 for ax in panels for t in ax.texts)
    assert all("n=200" in ax.get_title() for ax in panels)
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["6", "7"]
