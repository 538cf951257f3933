"""report_claim: the verdict line a page shows and the glue the introduction's table pastes."""

import pytest

import leafkit


def test_a_claim_is_glued_under_its_key_and_shown_in_bold(monkeypatch):
    myst_nb = pytest.importorskip("myst_nb")
    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display: glued.update(
        {key: (value, display)}))
    shown = leafkit.report_claim("prop-2-1", "Proposition 2.1", "partly held", "rank 9 of 10")
    assert glued == {"claim-prop-2-1-verdict": ("partly held", False),
                     "claim-prop-2-1-evidence": ("rank 9 of 10", False)}
    assert shown._repr_markdown_() == "**Proposition 2.1: partly held.** rank 9 of 10"


@pytest.mark.parametrize("key, verdict, evidence, problem", [
    ("fig-2", "holds", "x", "verdict must be one of"),
    ("Fig 2", "held", "x", "lowercase words joined by hyphens"),
    ("fig-2-", "held", "x", "lowercase words joined by hyphens"),
    ("fig-2", "held", "  ", "evidence"),
])
def test_bad_claims_name_the_problem(key, verdict, evidence, problem):
    with pytest.raises(ValueError, match=problem):
        leafkit.report_claim(key, "Figure 2", verdict, evidence)


def test_the_verdict_words_are_the_three_the_pages_use():
    assert leafkit.VERDICTS == ("held", "partly held", "not held")
