"""pii_v1: exact redactions per type, look-alikes left alone, labelled-set precision/recall, a real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.stages.pii.detect import Detector
from curation.stages.pii.labelled import labelled_lines, parse, score
from curation.stages.pii.stage import PIIConfig, PIIRedact
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.stages.filters.helpers import batch_of

REDACTIONS = [
    ("mail jane.doe@example.org, not @property", "mail <EMAIL>, not @property"),
    ("\"email\": \"o'brien@isp.net\"", "\"email\": \"<EMAIL>\""),
    ("from 93.184.216.34. v1.2.3.4 1.2.3.4.5 version 2.0.1.3", "from <IP_ADDRESS>. v1.2.3.4 1.2.3.4.5 version 2.0.1.3"),
    ("lan 192.168.1.1 dns 8.8.8.8 v6 2a03:2880:f12f:83:face:b00c:0:25de", "lan 192.168.1.1 dns 8.8.8.8 v6 <IP_ADDRESS>"),
    ("call +44 20 7946 0958 or (212) 555-0147 on 2024-01-15", "call <PHONE> or <PHONE> on 2024-01-15"),
    ("ISBN 978-3-16-148410-0, ref 12345678901, 020 7946 0958", "ISBN 978-3-16-148410-0, ref 12345678901, <PHONE>"),
    ("card 4111 1111 1111 1111 exp 12/27; bad 4111 1111 1111 1112", "card <CARD> exp 12/27; bad 4111 1111 1111 1112"),
    ("amex 3782-822463-10005 imei 490154203237518", "amex <CARD> imei 490154203237518"),
    ("id AKIAIOSFODNN7EXAMPLE sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709", "id <SECRET> sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("Authorization: Bearer abcdef1234567890abcdef", "Authorization: Bearer <SECRET>"),
    ("Authorization: Bearer YOUR_ACCESS_TOKEN_HERE", "Authorization: Bearer YOUR_ACCESS_TOKEN_HERE"),
    ("https://ghp_R2d9Xk3LmQ8vT1zP0aW7yB5nC4eF6gH2jK0s@github.com/o/r", "https://<SECRET>@github.com/o/r"),
    ("a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nQ2x=\n-----END RSA PRIVATE KEY-----\nb", "a\n<SECRET>\nb"),
    ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----"),
]


@pytest.mark.parametrize("text,expected", REDACTIONS)
def test_exact_redactions(text: str, expected: str) -> None:
    assert Detector().redact(text)[0] == expected


def test_truncated_private_key_block_stops_after_its_body() -> None:
    text = "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5v\nAAAAAAAB\n\nNext paragraph."
    assert Detector().redact(text)[0] == "key:\n<SECRET>\nNext paragraph."


def test_labelled_set_precision_and_recall() -> None:
    lines = labelled_lines()
    assert len(lines) >= 300 and sum(1 for ln in lines if not ln.spans) >= 150
    counts = score(Detector().find, lines)
    # Measured: every type precision >= 0.952 (ip) and recall >= 0.963 (phone); all 0.990 / 0.990 (docs/pii.md).
    for t, c in counts.items():
        assert c.tp + c.fn >= 50, t
        assert c.precision >= 0.93 and c.recall >= 0.94, (t, c)
    assert counts["all"].precision >= 0.97 and counts["all"].recall >= 0.97, counts["all"]


def test_parse_marks_and_score_counts() -> None:
    line = parse("a [[email|x@y.org]] b [[phone|+44 20 7946 0958]]")
    assert line.text == "a x@y.org b +44 20 7946 0958"
    assert [line.text[s:e] for s, e, _ in line.spans] == ["x@y.org", "+44 20 7946 0958"]
    c = score(lambda t: [(2, 9, "email"), (0, 1, "ip")], [line])
    assert (c["email"].tp, c["ip"].fp, c["phone"].fn, c["all"].tp + c["all"].fp + c["all"].fn) == (1, 1, 1, 3)


def test_stage_columns_mark_mode_and_placeholders() -> None:
    texts = ["a@b.org and c@d.org from 93.184.216.34", "nothing here", "pay 4111111111111111"]
    res = PIIRedact(PIIConfig()).process(batch_of(texts))
    kept = res.kept
    assert kept.column("text").to_pylist() == ["<EMAIL> and <EMAIL> from <IP_ADDRESS>", "nothing here", "pay <CARD>"]
    assert kept.column("pii_email").to_pylist() == [2, 0, 0] and kept.column("pii_card").to_pylist() == [0, 0, 1]
    assert kept.column("n_chars").to_pylist() == [len(t) for t in kept.column("text").to_pylist()]
    marked = PIIRedact(PIIConfig(mode="mark", types=["email"])).process(batch_of(texts)).kept
    assert marked.column("text").to_pylist() == texts
    assert marked.column("pii_email").to_pylist() == [2, 0, 0]
    assert marked.column("pii_card").to_pylist() == [None] * 3  # not enabled: null, not 0
    swapped = PIIRedact(PIIConfig(types=["email"], placeholders={"email": "[e]"})).process(batch_of(texts)).kept
    assert swapped.column("text").to_pylist()[0] == "[e] and [e] from 93.184.216.34"


def test_drop_if_secret_and_config_errors() -> None:
    res = PIIRedact(PIIConfig(drop_if_secret=True)).process(batch_of(["ok text", "k=AKIAIOSFODNN7EXAMPLE x@y.org"]))
    assert res.kept.column("id").to_pylist() == ["d0"] and res.reasons == ["contains_secret"]
    assert res.details == ['{"pii_card": 0, "pii_email": 1, "pii_ip": 0, "pii_phone": 0, "pii_secret": 1}']
    with pytest.raises(ValueError, match="unknown type"):
        PIIConfig(types=["email", "ssn"])
    with pytest.raises(ValueError, match="needs 'secret'"):
        PIIConfig(types=["email"], drop_if_secret=True)


def test_pipeline_run_writes_counts(tmp_path: Path) -> None:
    from curation.stats import query

    docs = [{"id": "a", "text": PROSE[0] + " Write to jane@example.org or call +44 20 7946 0958."},
            {"id": "b", "text": PROSE[1]},
            {"id": "c", "text": PROSE[2] + " token ghp_R2d9Xk3LmQ8vT1zP0aW7yB5nC4eF6gH2jK0s"}]
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "run"
    stages = [{"stage": "pii_v1", "drop_if_secret": True}]
    res = run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], out, stages=stages))
    _, rows = query(out, "SELECT id, pii_email, pii_phone, pii_secret, text FROM docs ORDER BY id")
    assert [r[:4] for r in rows] == [("a", 1, 1, 0), ("b", 0, 0, 0)]
    assert rows[0][4].endswith("Write to <EMAIL> or call <PHONE>.")
    _, totals = query(out, "SELECT sum(pii_email), sum(pii_phone) FROM docs")
    assert totals == [(1, 1)]
    _, dropped = query(out, "SELECT id, reason, json_extract(details, '$.pii_secret') FROM decisions")
    assert [(i, r, int(n)) for i, r, n in dropped] == [("c", "contains_secret", 1)]
    assert res.manifest["stages"][-1]["dropped"] == {"contains_secret": 1}
