"""The document page says whether a near-dedup drop was direct or through a chain (``details.via``)."""

from __future__ import annotations

from typing import Any

from curation.service.pages import ENV, via_note


def render(details: Any) -> str:
    x = {"stage": "near_dedup_v1", "reason": "near_duplicate", "details": details, "domain": "license",
         "source": "license-000.jsonl.gz", "n_chars": 1500, "text": "..."}
    d = {"outcome": "dropped", "dropped": [{**x, "via_note": via_note(details)}], "kept": None}
    return ENV.get_template("doc.html").render(run_id="qs", doc_id="license:Jinja2", d=d, dup=None, title="t")


def test_chain_and_direct_drops_are_told_apart_on_the_document_page() -> None:
    chain = render({"dup_of": "license:<torch>", "dup_cluster_size": 43, "jaccard": 0.7344, "via": "chain"})
    assert ('<p class="via">Through a chain: Jaccard 0.7344 with the kept document license:&lt;torch&gt; is below '
            "the stage&#39;s threshold") in chain
    direct = render({"dup_of": "license:pybind11", "dup_cluster_size": 11, "jaccard": 0.843, "via": "direct"})
    assert ('<p class="via">Direct duplicate: Jaccard 0.8430 with the kept document license:pybind11, at or above '
            "the stage&#39;s threshold.</p>") in direct
    # drops of other stages, and near-dedup decisions written before ``via`` existed: no line
    for details in ({"dup_of": "a"}, {"dup_of": "a", "jaccard": 0.9}, None, "text", {"via": "other"}):
        assert via_note(details) is None and '<p class="via">' not in render(details)
