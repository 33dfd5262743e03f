"""Comparison figures: one colour per model family, a marker per sweep within it."""

from types import SimpleNamespace

from engine.report.compare import styles


def sweep(name: str, *models: str, ladder: str = "") -> SimpleNamespace:
    trials = [{"preset": f"{ladder}{k}"} for k in range(3)] if ladder else []
    return SimpleNamespace(summary={"sweep": name, "models": list(models), "trials": trials})


def test_a_family_keeps_its_colour_across_axes_and_families_never_share_one():
    # the plain (t-ladder) and periodic (p-ladder) transformers are one model class, two families
    seed = [sweep(f"seed-{fam}-{axis}", model, ladder=ladder) for fam, model, ladder in
            (("eqv2", "equiformer_v2", "e"), ("transformer", "transformer", "t"), ("periodic", "transformer", "p"))
            for axis in ("params", "data", "compute")]
    got = styles(seed)
    colors = [c for c, _ in got]
    # seven or more sweeps used to cycle a 6-colour palette per sweep: the 7th (periodic params) took the
    # 1st's colour (EquiformerV2 params)
    assert colors[0:3] == [colors[0]] * 3 and colors[3:6] == [colors[3]] * 3 and colors[6:9] == [colors[6]] * 3
    assert len({colors[0], colors[3], colors[6]}) == 3
    assert [m for _, m in got[0:3]] == ["o", "s", "^"] == [m for _, m in got[6:9]]


def test_sweeps_without_models_are_their_own_family():
    got = styles([sweep("a"), sweep("b"), sweep("c", "fcn"), sweep("d", "fcn")])
    assert len({got[0][0], got[1][0], got[2][0]}) == 3 and got[2][0] == got[3][0]
