"""The demo model: plain bad news comes out bearish, and its report says its eval set is template-generated.

Before: trained and evaluated on the same templates (eval accuracy 1.0), it called headlines such as
"Company shares plunge 40% after fraud scandal" bullish.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from finsignal.demo import demo_model_dir, eval_accuracy, training_data
from signals.contracts import LABELS
from signals.model import SentimentModel

PLAIN = {
    "Acme Corp files for bankruptcy": "bearish",
    "Company shares plunge 40% after fraud scandal": "bearish",
    "CEO arrested, stock collapses": "bearish",
    "Walmart layoffs hit thousands as sales slump": "bearish",
    "Bitcoin crashes after exchange hack": "bearish",
    "Apple shares jump after record iPhone sales": "bullish",
    "Nvidia beats estimates and raises outlook": "bullish",
    "Bitcoin soars to record high": "bullish",
    "Microsoft to hold annual meeting on Tuesday": "neutral",
}


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory):
    """The demo model as `finsignal run` builds it: from FINSIGNAL_CACHE_DIR when set (builds there are keyed
    by corpus and recipe, so a cached one is this very model), else trained into a temporary cache."""
    if os.environ.get("FINSIGNAL_CACHE_DIR"):
        return demo_model_dir(progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINSIGNAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return demo_model_dir(progress=False)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first one trains the demo model
def test_plain_bad_and_good_headlines_come_out_right(demo_model):
    model = SentimentModel.load(demo_model)
    probs = model.score(list(PLAIN))
    got = {text: LABELS[int(np.argmax(row))] for text, row in zip(PLAIN, probs)}
    assert got == PLAIN


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first one trains the demo model
def test_report_and_metadata_say_the_eval_set_is_template_generated(demo_model):
    report = json.loads((demo_model / "report.json").read_text())
    assert report["data"]["kind"] == "template-generated" and report["data"]["real_news"] is False
    assert report["eval"]["data"] == "template-generated" and "not real news" in report["eval"]["caveat"]
    assert training_data(demo_model)["real_news"] is False  # finsignal.json lineage
    # Held-out templates: the accuracy is a measurement, not the 1.0 of memorised templates.
    assert 0.0 < eval_accuracy(demo_model) < 1.0
