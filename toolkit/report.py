"""The claims report: every claim of ``CLAIMS.md``, one verdict table, from results only.

``toolkit report`` reads ``results/<experiment>/<profile>/`` (verdicts, summary and
meta.json) for every experiment and writes ``results/REPORT.md`` and
``results/REPORT.html`` (the same content, figures shown inline). Nothing is trained
and nothing time-dependent is written, so the same results give the same bytes.

A claim's row gathers the verdict rows of every experiment that tests it: one
verdict when they agree, else ``mixed`` with the counts; its key number is the first
row's statistic with its 95% CI. A claim no experiment has results for says
``not run``; a claim the claims file marks not-testable says so. Then one section per
experiment: provenance (profile, seeds, commit, machine, wall time), every verdict row,
and the figures. Result folders named ``<profile>-<tag>`` beside ``<profile>`` (the
same command on other hardware, e.g. ``default-h200``) are compared with
:mod:`toolkit.compare` in a section of their own.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from toolkit import compare as cmp
from toolkit import runner, spec
from toolkit.results import ResultsFolder, atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
CLAIMS_FILE = ROOT / "CLAIMS.md"
CLAIM_ROW = re.compile(r"^\| (C\d\d) \| (.*?) \| (.*) \|$")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    hypothesis: str

    @property
    def testable(self) -> bool:
        return not self.hypothesis.lower().startswith("not-testable")


def read_claims(path: Path | str = CLAIMS_FILE) -> list[Claim]:
    """The claims table of ``CLAIMS.md`` (rows ``| Cnn | statement | hypothesis |``)."""
    claims = []
    for line in Path(path).read_text().splitlines():
        match = CLAIM_ROW.match(line.strip())
        if match:
            claims.append(Claim(*match.groups()))
    if not claims:
        raise ValueError(f"{path}: no claim rows (| C01 | ... | ... |) found")
    return claims


# ----- a tiny document model rendered to both Markdown and HTML -------------------
@dataclass
class Doc:
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("t", header, rows))

    def images(self, items: list[tuple[str, str]]) -> None:
        self.blocks.append(("i", items))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append("#" * block[1] + " " + block[2])
            elif block[0] == "p":
                out.append(block[1])
            elif block[0] == "t":
                header, rows = block[1], block[2]
                lines = [_md_row(header), "|" + "|".join("---" for _ in header) + "|"]
                out.append("\n".join(lines + [_md_row(r) for r in rows]))
            else:
                out.append("\n".join(f"![{alt}]({src})" for alt, src in block[1]))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
            "padding:3px 6px;vertical-align:top}img{max-width:520px;margin:4px}</style>",
            "</head><body>",
        ]
        for block in self.blocks:
            if block[0] == "h":
                out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif block[0] == "p":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif block[0] == "t":
                head = "".join(f"<th>{_inline(c)}</th>" for c in block[1])
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                    for row in block[2]
                )
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                out.append(
                    "<div>"
                    + "".join(
                        f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
                        for alt, src in block[1]
                    )
                    + "</div>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _inline(text: str) -> str:
    """The Markdown subset used here (`code`, **bold**, [link](href)) as HTML."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


# ----- gathering results ---------------------------------------------------------
@dataclass
class ExperimentResults:
    experiment: spec.Experiment
    folder: ResultsFolder
    verdicts: pd.DataFrame
    figures: list[Path]


def _num(x: float) -> str:
    return "—" if pd.isna(x) else f"{x:.3g}"


def _key_number(row) -> str:
    return f"{row.statistic} = {_num(row.estimate)} [{_num(row.ci_low)}, {_num(row.ci_high)}]"


def _overall(verdicts: pd.Series) -> str:
    counts = verdicts.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    order = ["supported", "contradicted", "inconclusive"]
    parts = [f"{counts[v]} {v}" for v in order if v in counts]
    return "mixed (" + ", ".join(parts) + ")"


def gather(results: Path, profile: str) -> list[ExperimentResults]:
    found = []
    for name in spec.experiment_names():
        folder = ResultsFolder(results / name / profile)
        if not (folder.path / "verdicts.csv").exists():
            continue
        verdicts = folder.verdicts()
        verdicts["condition"] = verdicts["condition"].fillna("").astype(str)
        fig_dir = results.parent / "paper_figures" / name / profile
        figures = sorted(fig_dir.glob("*.png"))
        found.append(ExperimentResults(spec.load(name), folder, verdicts, figures))
    return found


def _provenance(found: ExperimentResults) -> list[str]:
    meta = found.folder.meta()
    invocations = meta.get("invocations") or [{}]
    last = invocations[-1]
    summary = found.folder.summary()
    # the invocations that trained runs made the numbers (a re-analysis trains none)
    trained = [i for i in invocations if i.get("new_runs")]
    source = trained[-1] if trained else last
    walls = [i["wall_s"] for i in trained if "wall_s" in i]
    wall = sum(walls) if walls else last.get("wall_s")
    profile, seeds = meta.get("profile", "default"), int(meta.get("seeds", 10))
    cohorts = runner.group_cohorts(runner.plan_runs(found.experiment, profile, seeds, {}))
    return [
        f"`{found.experiment.name}`",
        str(meta.get("profile", "")),
        str(meta.get("seeds", "")),
        str(len(summary)),
        str(len(cohorts)),
        f"{meta.get('device_kind', '')} ({meta.get('backend', '')}, jax "
        f"{meta.get('versions', {}).get('jax', '')})",
        str(source.get("git_commit", "unknown"))[:12],
        "—" if wall is None else f"{wall:.0f} s",
    ]


def _link(path: Path, base: Path) -> str:
    return Path(_relative(path, base)).as_posix()


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), base.resolve())


CLAIM_HEADER = ["id", "the article says", "experiments", "key number", "verdict", "figure"]


def claim_rows(
    claims: list[Claim], found: list[ExperimentResults], link_base: Path, anchors: bool = True
) -> list[list[str]]:
    """One row per claim: experiments, key number with CI, overall verdict, figure link
    (relative to ``link_base``; experiment names link to their report sections when
    ``anchors``)."""
    rows = []
    for claim in claims:
        hits = [(f, f.verdicts[f.verdicts["claim_id"] == claim.id]) for f in found]
        hits = [(f, v) for f, v in hits if not v.empty]
        if not claim.testable:
            rows.append([claim.id, claim.statement, "—", "—", "not-testable", "—"])
            continue
        if not hits:
            rows.append([claim.id, claim.statement, "—", "—", "not run", "—"])
            continue
        first_found, first_rows = hits[0]
        first = next(first_rows.itertuples())
        number = _key_number(first) + (f" ({first.condition})" if first.condition else "")
        total = sum(len(v) for _, v in hits)
        if total > 1:
            number += f"; {total} rows"
        verdicts = pd.concat([v["verdict"] for _, v in hits])
        names = [f.experiment.name for f, _ in hits]
        experiments = ", ".join(f"[`{n}`](#{n})" if anchors else f"`{n}`" for n in names)
        figure = _claim_figure(first_found, claim.id)
        link = f"[figure]({_link(figure, link_base)})" if figure else "—"
        rows.append([claim.id, claim.statement, experiments, number, _overall(verdicts), link])
    return rows


def build(results: Path | str = "results", profile: str = "default") -> Doc:
    results = Path(results)
    claims = read_claims()
    found = gather(results, profile)
    doc = Doc()
    doc.heading(1, "How neural networks learn: the claims, tested")
    doc.para(
        f"Generated by `toolkit report --profile {profile}` from the CSVs under "
        f"`{results.name}/` (no training). Verdicts: the 95% CI over seeds lies on the "
        "predicted side (`supported`), on the other side (`contradicted`), or covers "
        "zero (`inconclusive`); `mixed` means the rows of a claim disagree (conditions "
        "or measures differ; see the experiment's section). Key number: the claim's "
        "first verdict row."
    )
    doc.heading(2, "Claims")
    doc.table(CLAIM_HEADER, claim_rows(claims, found, results))

    doc.heading(2, "Provenance")
    doc.para(
        "Commit: the code that trained the runs (the last invocation that trained any). "
        "Wall: the training invocations' wall time as recorded, on a machine that may "
        "have been shared (times measured alone are in `benchmarks/README.md`)."
    )
    doc.table(
        ["experiment", "profile", "seeds", "runs", "cohorts", "machine", "commit", "wall (as run)"],
        [_provenance(f) for f in found],
    )
    _hardware_section(doc, results, profile, found)
    for f in found:
        _experiment_section(doc, f, results)
    return doc


def _claim_figure(found: ExperimentResults, claim_id: str) -> Path | None:
    """The experiment's ``CLAIM_FIGURES[claim]`` figure, else its first figure."""
    names = getattr(found.experiment.module, "CLAIM_FIGURES", {})
    if claim_id in names:
        wanted = [p for p in found.figures if p.stem == names[claim_id]]
        if wanted:
            return wanted[0]
    return found.figures[0] if found.figures else None


def _experiment_section(doc: Doc, found: ExperimentResults, results: Path) -> None:
    name = found.experiment.name
    doc.heading(2, name)
    doc.para(
        f"{found.experiment.summary_line} Claims: {', '.join(found.experiment.claims)}. "
        f"Command: `toolkit run {name} --seeds {found.folder.meta().get('seeds', 10)}`."
    )
    rows = [
        [
            r.claim_id,
            r.condition,
            r.statistic,
            _num(r.estimate),
            f"[{_num(r.ci_low)}, {_num(r.ci_high)}]",
            str(r.n_seeds),
            r.verdict,
            str(r.finding),
        ]
        for r in found.verdicts.itertuples()
    ]
    doc.table(
        ["claim", "condition", "statistic", "estimate", "95% CI", "n", "verdict", "finding"], rows
    )
    if found.figures:
        doc.images([(p.stem, _link(p, results)) for p in found.figures])


def _hardware_section(doc: Doc, results: Path, profile: str, found) -> None:
    pairs = []
    for f in found:
        for other in sorted((results / f.experiment.name).glob(f"{profile}-*")):
            if (other / "summary.csv").exists():
                pairs.append((f, other))
    if not pairs:
        return
    doc.heading(2, "Same command, other hardware")
    doc.para(
        "`toolkit compare` of each result folder with its twin run elsewhere (same run "
        "ids): per metric and grid point, TOST equivalence of the paired-by-seed "
        "difference at the default tolerances (0.01 for accuracies, 5% of the mean "
        "otherwise)."
    )
    rows = []
    for f, other in pairs:
        comparison = cmp.compare(f.folder.path, other)
        counts = comparison.counts()
        claims = comparison.claims
        changed = 0 if claims.empty else int((claims["status"] != "same").sum())
        meta_b = ResultsFolder(other).meta()
        rows.append(
            [
                f"`{f.experiment.name}`",
                f"{profile} vs {other.name} ({meta_b.get('device_kind', '?')})",
                str(counts["equivalent"]),
                str(counts["inconclusive"]),
                str(counts["different"]),
                str(changed),
            ]
        )
    doc.table(
        ["experiment", "folders", "equivalent", "inconclusive", "different", "verdicts changed"],
        rows,
    )


README_START = "<!-- claims table: written by `toolkit report` -->"
README_END = "<!-- end of claims table -->"


def readme_with_claims(readme: str, results: Path, profile: str, base: Path) -> str:
    """``readme`` with the claims table between the two marker comments refreshed."""
    if README_START not in readme or README_END not in readme:
        return readme
    found = gather(results, profile)
    table = Doc()
    table.table(CLAIM_HEADER, claim_rows(read_claims(), found, base, anchors=False))
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return head + README_START + "\n\n" + table.markdown() + "\n" + README_END + tail


def write(
    results: Path | str = "results", profile: str = "default", readme: Path | None = None
) -> list[Path]:
    """Write ``REPORT.md`` and ``REPORT.html`` into ``results`` (and, for the default
    profile, refresh the claims table in ``readme``); return the paths written."""
    results = Path(results)
    doc = build(results, profile)
    suffix = "" if profile == "default" else f"-{profile}"
    md, page = results / f"REPORT{suffix}.md", results / f"REPORT{suffix}.html"
    atomic_write_bytes(md, doc.markdown().encode())
    atomic_write_bytes(page, doc.html("How neural networks learn: the claims, tested").encode())
    written = [md, page]
    if readme is not None and profile == "default" and Path(readme).exists():
        text = Path(readme).read_text()
        new = readme_with_claims(text, results, profile, Path(readme).parent)
        if new != text:
            atomic_write_bytes(Path(readme), new.encode())
            written.append(Path(readme))
    return written
