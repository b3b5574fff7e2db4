# python benchmarks/preselect_effect.py --out runs/preselect_effect            # the full run (docs/preselect_effect.md)
# python benchmarks/preselect_effect.py --out /tmp/pe --quick                  # CI smoke: the loop end to end
"""PreSelect at micro scale: does data selected by predictive strength teach a small model better?

Everything runs through the project's own commands (``curate run``, ``curate train-scorer``,
``train run``, ``train eval``, ``train export-hf``, ``train natural-mixture``) as subprocesses, so
the experiment is also the end-to-end test of the loop from training back to curation.

1. Sources, built deterministically from what any Debian machine of this kind has offline:
   pool = docstrings of the stdlib and the installed packages (``python_docs``), stdlib source
   (``code``), package and Debian READMEs (``readme``), package licence files and Debian
   ``copyright`` files (``license``), Debian ``changelog.Debian`` files (``changelog``), and
   machine-degraded copies of docstrings and READMEs (``shuffled``: words shuffled within each
   document; ``truncated``: a random 10-40% prefix, cut mid-word). Each source gives at most an
   equal share of ``pool_mb``.
   Every 20th document of each pool source goes to the *general* held-out set instead.
   Target = English man pages (``/usr/share/man``, roff markup stripped), a source the pool does
   not contain: its ``dev`` half is the only selection signal (PreSelect's per-model target scores,
   DCLM's positives); its ``test`` half (other pages) is the held-out target evaluation.
2. Pool: ``curate run`` with text_length_v1 -> exact_dedup_v1 -> near_dedup_v1.
3. Family: 6 GPTs trained with ``train run`` on the pool (different sizes, steps, domain mixes);
   target score of each = minus its loss on target dev (``train eval``); exported (``train
   export-hf``) for ``lm_loss_v1``.
4. Arms, each a ``curate run`` over the pool keeping ``--keep`` of its characters:
   ``preselect`` (lm_loss_v1 on a random sample -> predictive_strength_v1 -> ``curate train-scorer
   --run`` -> fasttext_score_v1 + select_v1), ``dclm`` (fastText target dev vs pool, ``--positive/
   --negative``), ``perplexity`` (lowest bpc under the best family model), ``random``
   (random_score_v1), and ``none`` (the whole filtered pool, no selection, at the same training tokens).
5. Per arm and seed a fresh model (same size, same steps for the selection arms) trained on the
   arm's own domain proportions (``train natural-mixture``), evaluated on target test and general
   held-out (``train eval``). Output: results.json, table.md, curves.png under ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import random
import re
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._commands import Commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POOL_DOMAINS = ("python_docs", "code", "readme", "license", "changelog", "shuffled", "truncated")
TARGET = "manpage"


def _corpus_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_sample_corpus", REPO / "scripts" / "make_sample_corpus.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


_ROFF_ESC = re.compile(r"\\f[BIRPC]|\\f\(..|\\f\[[^]]*\]|\\\(..|\\\[[^]]*\]|\\[&%e|^~0:c]|\\s[-+]?\d|\\\*.")


def roff_text(src: str) -> str:
    """Plain text of a man page: requests dropped (their arguments kept for headings and fonts)."""
    out = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.TH', '.so', '.de', '.ds', '.nr', '.ig', '.if', '.ie', '.el')):
            continue
        if line.startswith((".", "'")):
            parts = line.split(None, 1)
            line = parts[1].replace('"', "") if len(parts) > 1 and parts[0][1:] in (
                "SH", "SS", "B", "I", "BI", "IB", "BR", "RB", "IR", "RI", "TP", "IP") else ""
        line = _ROFF_ESC.sub("", line).replace("\\-", "-").replace("\\\\", "\\")
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def man_pages(limit_bytes: int) -> list[dict]:
    docs, total = [], 0
    for sec in ("1", "5", "8"):
        for path in sorted(Path(f"/usr/share/man/man{sec}").glob("*.gz")):
            try:
                text = roff_text(gzip.open(path, "rt", encoding="utf-8", errors="replace").read())
            except (OSError, EOFError):
                continue
            if len(text) >= 800:
                docs.append({"id": f"man:{path.name}", "text": text[:20000], "domain": TARGET, "origin": str(path)})
                total += len(docs[-1]["text"])
            if total >= limit_bytes:
                return docs
    return docs


def site_docs(min_chars: int, limit_chars: int) -> list[dict]:
    """Docstrings of the installed packages (site-packages), package by package in name order,
    until ``limit_chars``: the stdlib alone has about 1 MB of docstrings."""
    mod = _corpus_module()
    root = Path(sysconfig.get_paths()["purelib"])
    docs, total = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in ("test", "__pycache__", "_vendor")):
            continue
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        for name, doc in mod.file_docstrings(path, module, min_chars):
            docs.append({"id": f"pydoc:{name}", "text": doc, "domain": "python_docs", "origin": f"site-packages/{rel}"})
            total += len(doc)
        if total >= limit_chars:
            break
    return docs


def stdlib_code(max_bytes: int, limit_chars: int) -> list[dict]:
    """Standard-library modules (subpackages included, tests not), whole files up to ``max_bytes``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in ("test", "site-packages", "idlelib", "lib2to3", "__pycache__")):
            continue
        if path.stat().st_size > max_bytes:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > 500:
            docs.append({"id": f"pycode:{rel}", "text": text, "domain": "code", "origin": f"stdlib/{rel}"})
            total += len(text)
        if total >= limit_chars:
            break
    return docs


def debian_docs(pattern: str, domain: str, limit_chars: int, max_chars: int = 20000) -> list[dict]:
    """Files under /usr/share/doc matching ``pattern`` (gzipped or plain), each cut to ``max_chars``:
    Debian ``copyright`` files are licence boilerplate, ``changelog.Debian`` files terse release notes."""
    docs, total = [], 0
    for path in sorted(Path("/usr/share/doc").glob(pattern)):
        if not path.is_file():
            continue
        try:
            raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError):
            continue
        text = raw.decode("utf-8", errors="replace").strip()[:max_chars]
        if len(text) >= 200:
            docs.append({"id": f"{domain}:{path.relative_to('/usr/share/doc').as_posix()}", "text": text,
                         "domain": domain, "origin": str(path)})
            total += len(text)
        if total >= limit_chars:
            break
    return docs


def degrade(docs: list[dict], kind: str, seed: int) -> list[dict]:
    out = []
    for d in docs:
        rng = random.Random(_h(f"{seed}/{kind}/{d['id']}"))
        if kind == "shuffled":
            words = d["text"].split()
            rng.shuffle(words)
            text = " ".join(words)
        else:
            text = d["text"][: max(200, int(len(d["text"]) * rng.uniform(0.1, 0.4)))]
        out.append({**d, "id": f"{kind}:{d['id']}", "text": text, "domain": kind})
    return out


def write_jsonl(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        for d in docs:
            fh.write((json.dumps(d, ensure_ascii=False) + "\n").encode())


def build_sources(src: Path, pool_bytes: int, target_bytes: int) -> dict[str, Any]:
    """Pool files per domain, general held-out, target dev/test; returns byte counts."""
    mod = _corpus_module()
    cap = pool_bytes // len(POOL_DOMAINS)  # each source at most an equal share of the pool
    pkg = list(mod.package_texts(200))
    stdlib_docs = list(mod.stdlib_docs(200))
    # every reader stops at twice the share (the deterministic shuffle below then picks the share
    # from all of it), so building a small pool reads little
    raw = {"python_docs": stdlib_docs + site_docs(200, 2 * cap - sum(len(d["text"]) for d in stdlib_docs)),
           "code": stdlib_code(60_000, 2 * cap),
           "readme": [r for r in pkg if r["domain"] == "readme"] + debian_docs("*/README*", "readme", 2 * cap),
           "license": [r for r in pkg if r["domain"] == "license"] + debian_docs("*/copyright", "license", 2 * cap),
           "changelog": debian_docs("*/changelog.Debian*", "changelog", 2 * cap)}
    raw["shuffled"] = degrade(raw["python_docs"] + raw["readme"], "shuffled", 0)
    raw["truncated"] = degrade(raw["python_docs"] + raw["readme"] + raw["code"], "truncated", 0)
    stats: dict[str, Any] = {"pool": {}, "general_test": {}}
    general = []
    for dom in POOL_DOMAINS:
        docs = sorted(raw[dom], key=lambda d: _h(d["id"]))  # a deterministic shuffle
        held = [d for i, d in enumerate(docs) if i % 20 == 0][:max(5, cap // 20 // 2000)]
        pool, total = [], 0
        for d in (d for i, d in enumerate(docs) if i % 20 != 0):
            if total >= cap:
                break
            pool.append(d)
            total += len(d["text"])
        write_jsonl(src / "pool" / f"{dom}.jsonl.gz", pool)
        general += held
        stats["pool"][dom] = {"docs": len(pool), "chars": total}
        stats["general_test"][dom] = {"docs": len(held), "chars": sum(len(d["text"]) for d in held)}
    write_jsonl(src / "general_test.jsonl.gz", general)
    pages = man_pages(2 * target_bytes)
    dev = [p for p in pages if _h(p["id"]) % 2 == 0]
    test = [p for p in pages if _h(p["id"]) % 2 == 1]
    write_jsonl(src / "target_dev.jsonl.gz", dev)
    write_jsonl(src / "target_test.jsonl.gz", test)
    stats["target"] = {"dev_docs": len(dev), "test_docs": len(test), "dev_chars": sum(len(p["text"]) for p in dev),
                       "test_chars": sum(len(p["text"]) for p in test)}
    return stats


class Runner(Commands):
    """The project's commands (``benchmarks/_commands.py``) plus ``curate run`` of a pipeline dict."""

    def __init__(self, out: Path, threads: int, in_process: bool) -> None:
        super().__init__(REPO, out / "commands.log", threads, in_process)
        self.out = out

    def curate_run(self, name: str, inputs: list[str], stages: list[dict], out: Path) -> float:
        cfg = {"name": name, "input": {"paths": inputs, "id_field": "id", "domain_field": "domain", "batch_size": 200},
               "stages": stages, "output": {"dir": str(out)}, "executor": {"kind": "local"}}
        path = self.out / "pipelines" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(cfg, indent=1))
        return self("curation.cli", "run", str(path))[1]


def last_json(stdout: str) -> Any:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


def train_cfg(p: dict[str, Any], path: Path) -> Path:
    cfg = {"data": {"runs": [], "seq_len": p["seq_len"], "batch_size": p["batch_size"], "tokenizer": "bytes"},
           "model": {"n_layer": 2, "n_head": 2, "d_model": 64}, "schedule": {"kind": "cosine", "lr": 3e-3, "warmup_steps": 10},
           "steps": 100, "eval_every": p["eval_every"], "eval_batches": 2, "checkpoint_every": 10_000}
    path.write_text(json.dumps(cfg))
    return path


PARAMS = {  # fixed before any evaluation; --quick shrinks everything to a smoke test
    "full": {"pool_mb": 26.0, "target_mb": 1.0, "keep": 0.15, "seq_len": 128, "batch_size": 16, "eval_every": 50,
             "family": [(32, 1, 100, "all"), (32, 1, 400, "all"), (64, 2, 200, "docs"), (64, 2, 600, "all"),
                        (64, 2, 300, "code"), (96, 2, 1000, "all")],
             "label_fraction": 0.1, "lm_max_tokens": 1024, "max_eval_tokens": 200_000, "seeds": 10},
    "quick": {"pool_mb": 1.5, "target_mb": 0.1, "keep": 0.15, "seq_len": 64, "batch_size": 8, "eval_every": 10,
              "family": [(16, 1, 5, "all"), (16, 1, 20, "all"), (32, 1, 40, "docs"), (32, 1, 30, "all"),
                         (32, 1, 40, "code"), (32, 2, 40, "all")],
              "label_fraction": 0.1, "lm_max_tokens": 256, "max_eval_tokens": 5000, "seeds": 1, "arm_steps": 20},
}
MIXES = {"all": None, "docs": {"python_docs": 1.0, "readme": 1.0}, "code": {"code": 1.0, "license": 1.0}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "preselect_effect")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny pool, models and runs (CI)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                    help="run the commands in this interpreter instead of one python per command "
                         "(default: in-process with --quick, subprocesses otherwise)")
    args = ap.parse_args(argv)
    p = dict(PARAMS["quick" if args.quick else "full"])
    seeds = args.seeds or p["seeds"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = Runner(out, args.threads, args.quick if args.in_process is None else args.in_process)
    t_start = time.time()
    src, runs = out / "src", out / "runs"
    stats = build_sources(src, int(p["pool_mb"] * 1e6), int(p["target_mb"] * 1e6))
    filters = [{"stage": "text_length_v1", "min_chars": 200}, {"stage": "exact_dedup_v1"},
               {"stage": "near_dedup_v1", "threshold": 0.8,
                # licence files are near-copies of a few templates: most of that source going is intended
                "on_mass_removal": "warn"}]
    run.curate_run("pool", [str(src / "pool" / "*.jsonl.gz")], filters, runs / "pool")
    for name in ("target_dev", "target_test", "general_test"):
        run.curate_run(name, [str(src / f"{name}.jsonl.gz")], [], runs / name)
    pool_shards = [str(runs / "pool" / "shards" / "*.parquet")]
    base = train_cfg(p, out / "base.json")
    pool_mix = out / "mix_pool.json"
    run("training.cli", "natural-mixture", str(runs / "pool"), "--out", str(pool_mix))
    natural = json.loads(pool_mix.read_text())["ratios"]

    # -- the family of reference models -------------------------------------------------------
    family = []
    for k, (d, layers, steps, mix) in enumerate(p["family"]):
        fdir = out / "family" / f"m{k}"
        ratios = MIXES[mix] or natural
        run("training.cli", "run", str(base), "-o", f"data.runs=[{runs / 'pool'}]", "-o", f"data.ratios={json.dumps(ratios)}",
            "-o", f"model.d_model={d}", "-o", f"model.n_layer={layers}", "-o", f"steps={steps}", "-o", f"out_dir={fdir}",
            "-o", f"seed={k}")
        ev = last_json(run("training.cli", "eval", str(fdir / "checkpoint.pt"), "--runs", str(runs / "target_dev"),
                           "--max-tokens", str(p["max_eval_tokens"]))[0])
        run("training.cli", "export-hf", str(fdir / "checkpoint.pt"), str(fdir / "hf"))
        family.append({"name": f"m{k}", "d_model": d, "n_layer": layers, "steps": steps, "mix": mix,
                       "target_dev_loss": ev["all"]["loss"], "score": -ev["all"]["loss"], "path": str(fdir / "hf")})
    best = max(family, key=lambda m: m["score"])
    lm = {"stage": "lm_loss_v1", "block_size": p["seq_len"], "stride": p["seq_len"] // 2, "device": "cpu",
          "max_tokens": p["lm_max_tokens"], "batch_size": 16}

    # -- selection arms: each a curation run over the pool ------------------------------------
    keep = p["keep"]
    sel: dict[str, dict[str, Any]] = {}
    t = run.curate_run("labels", pool_shards, [
        {"stage": "random_score_v1", "name": "sample", "seed": 1},
        {"stage": "select_v1", "column": "score_sample", "top_fraction": p["label_fraction"]},
        {**lm, "models": [{"name": m["name"], "path": m["path"]} for m in family]},
        {"stage": "predictive_strength_v1", "models": [{"name": m["name"], "score": m["score"]} for m in family]}],
        runs / "labels")
    t += run("curation.cli", "train-scorer", str(out / "scorer_preselect"), "--run", str(runs / "labels"),
             "--epoch", "10", "--bucket", "200000", "--valid-fraction", "0.1")[1]
    t += run.curate_run("sel_preselect", pool_shards, [
        {"stage": "fasttext_score_v1", "models": [{"name": "preselect", "path": str(out / "scorer_preselect")}]},
        {"stage": "select_v1", "column": "score_preselect", "top_fraction": keep}], runs / "sel_preselect")
    sel["preselect"] = {"recipe_s": t}
    t = run("curation.cli", "train-scorer", str(out / "scorer_dclm"), "--positive", str(src / "target_dev.jsonl.gz"),
            "--negative", pool_shards[0], "--epoch", "10", "--bucket", "200000", "--valid-fraction", "0.1")[1]
    t += run.curate_run("sel_dclm", pool_shards, [
        {"stage": "fasttext_score_v1", "models": [{"name": "dclm", "path": str(out / "scorer_dclm")}]},
        {"stage": "select_v1", "column": "score_dclm", "top_fraction": keep}], runs / "sel_dclm")
    sel["dclm"] = {"recipe_s": t}
    t = run.curate_run("sel_perplexity", pool_shards, [
        {**lm, "models": [{"name": "ref", "path": best["path"]}]},
        {"stage": "select_v1", "column": "bpc_ref", "top_fraction": keep, "lowest": True}], runs / "sel_perplexity")
    sel["perplexity"] = {"recipe_s": t}
    t = run.curate_run("sel_random", pool_shards, [
        {"stage": "random_score_v1", "seed": 0},
        {"stage": "select_v1", "column": "score_random", "top_fraction": keep}], runs / "sel_random")
    sel["random"] = {"recipe_s": t}
    sel["none"] = {"recipe_s": 0.0}

    # -- one fresh model per arm and seed -----------------------------------------------------
    tokens_per_step = p["seq_len"] * p["batch_size"]
    pool_manifest = json.loads((runs / "pool" / "manifest.json").read_text())
    pool_tokens = sum(v["chars"] for v in pool_manifest["domains"].values())  # byte tokens ~ characters
    results: dict[str, Any] = {"params": p, "sources": stats, "family": family, "arms": {}}
    for arm, info in sel.items():
        arm_run = runs / ("pool" if arm == "none" else f"sel_{arm}")
        mix = out / f"mix_{arm}.json"
        info["ratios"] = last_json(run("training.cli", "natural-mixture", str(arm_run), "--out", str(mix))[0])["ratios"]
        manifest = json.loads((arm_run / "manifest.json").read_text())
        info["docs"] = manifest["totals"]["docs_out"]
        info["chars"] = sum(v["chars"] for v in manifest["domains"].values())
        results["arms"][arm] = info
    sel_tokens = keep * pool_tokens
    arm_steps = p.get("arm_steps") or max(50, int(sel_tokens / tokens_per_step))
    eval_domains = [TARGET] + sorted(stats["pool"])
    for arm, info in sel.items():
        info["steps"] = arm_steps  # equal training tokens for every arm, `none` included (it samples the whole pool)
        info["tokens_seen"] = info["steps"] * tokens_per_step
        info["seeds"] = []
        for seed in range(seeds):
            adir = out / "arms" / f"{arm}-s{seed}"
            _, dt = run("training.cli", "run", str(base), "-o", f"data.runs=[{runs / ('pool' if arm == 'none' else 'sel_' + arm)}]",
                        "-o", f"data.ratios_file={out / f'mix_{arm}.json'}", "-o", f"steps={info['steps']}", "-o", f"seed={seed}",
                        "-o", f"data.seed={seed}", "-o", f"out_dir={adir}",
                        "-o", f"eval_runs=[{runs / 'target_test'}, {runs / 'general_test'}]",
                        "-o", f"eval_domains=[{', '.join(eval_domains)}]")
            tgt = last_json(run("training.cli", "eval", str(adir / "checkpoint.pt"), "--runs", str(runs / "target_test"),
                                "--max-tokens", str(p["max_eval_tokens"]))[0])
            gen = last_json(run("training.cli", "eval", str(adir / "checkpoint.pt"), "--runs", str(runs / "general_test"),
                                "--max-tokens", str(p["max_eval_tokens"]))[0])
            curve = [json.loads(x) for x in (adir / "log.jsonl").read_text().splitlines()]
            curve = [{"step": c["step"], "target": c["eval"][TARGET],
                      "general": sum(c["eval"][d] for d in stats["pool"]) / len(stats["pool"])} for c in curve if "eval" in c]
            info["seeds"].append({"seed": seed, "target_loss": tgt["all"]["loss"],
                                  "general_loss": sum(v["loss"] for v in gen["domains"].values()) / len(gen["domains"]),
                                  "general_by_domain": {d: v["loss"] for d, v in gen["domains"].items()},
                                  "train_s": dt, "s_per_step": dt / info["steps"], "curve": curve})
    results["wall_s"] = time.time() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results))
    plot(results, out / "curves.png")
    print(table(results))
    print(f"wall time {results['wall_s']:.0f} s; results in {out}")
    return results


def _ms(xs: list[float]) -> str:
    import numpy as np

    return f"{np.mean(xs):.4f} ± {np.std(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def table(res: dict[str, Any]) -> str:
    rows = ["| arm | docs kept | chars kept | tokens seen | target loss (nats/byte) | general loss (nats/byte) | selection s | train s/step |",
            "|---|---|---|---|---|---|---|---|"]
    for arm, a in res["arms"].items():
        s = a["seeds"]
        rows.append(f"| {arm} | {a['docs']} | {a['chars']:,} | {a['tokens_seen']:,} | {_ms([x['target_loss'] for x in s])} | "
                    f"{_ms([x['general_loss'] for x in s])} | {a['recipe_s']:.0f} | "
                    f"{sum(x['s_per_step'] for x in s) / len(s):.3f} |")
    return "\n".join(rows) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for arm, a in res["arms"].items():
        steps = [c["step"] for c in a["seeds"][0]["curve"]]
        for k, key in enumerate(("target", "general")):
            ys = np.mean([[c[key] for c in s["curve"]] for s in a["seeds"]], axis=0)
            ax[k].plot(steps, ys, label=arm)
    ax[0].set(xlabel="step", ylabel="loss (nats/byte)", title="target held-out (man pages, test half)")
    ax[1].set(xlabel="step", ylabel="loss (nats/byte)", title="general held-out (pool sources, mean over domains)")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
