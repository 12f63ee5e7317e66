//! README.zh-CN.md is README.md for Chinese site crews, section for section. These tests keep the
//! two in step: the English README links to the Chinese one on its first line; every `##` and
//! `###` heading of README.md has exactly one heading of the same level in README.zh-CN.md, in
//! the same order, with `<!-- en: <English heading> -->` on the line right below it; the fenced
//! code blocks name the same commands; and there are as many code blocks in each.
//!
//! Editing README.md? Make the same change in README.zh-CN.md (a new section needs its Chinese
//! heading and its marker); the failure messages say what is out of step and where.

use std::collections::BTreeMap;
use std::path::Path;

const EN: &str = "README.md";
const ZH: &str = "README.zh-CN.md";
const EN_FIRST_LINE: &str = "[中文说明 README.zh-CN.md](README.zh-CN.md)";
const ZH_FIRST_LINE: &str = "[English README.md](README.md)";

/// What a line of code must start with (after `$ `) to count as a command.
const COMMAND_STARTS: &[&str] = &[
    "dustgate",
    "scripts/",
    "cargo ",
    "sudo ",
    "systemctl",
    "journalctl",
    "apt",
    "dpkg",
    "curl",
    "git clone",
];

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Prose,
    /// A line that opens or closes a fenced code block.
    Fence,
    /// A line inside a fenced code block.
    Code,
}

struct Line {
    /// 1-based, as editors count.
    no: usize,
    text: String,
    kind: Kind,
}

struct Block {
    /// The line of the opening fence.
    line: usize,
    /// The info string (`bash`, `toml`, or empty).
    info: String,
}

struct Doc {
    name: &'static str,
    lines: Vec<Line>,
    blocks: Vec<Block>,
    /// The line of a fence that is never closed.
    unclosed: Option<usize>,
}

/// A fence opens with three or more backticks or tildes (indented fences inside list items
/// included) and closes with at least as many of the same character and nothing else.
fn parse(name: &'static str, text: &str) -> Doc {
    let mut lines = Vec::new();
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, usize)> = None; // fence char, its length, opening line
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let t = raw.trim();
        let fence = t
            .chars()
            .next()
            .filter(|c| *c == '`' || *c == '~')
            .map(|c| (c, t.chars().take_while(|x| *x == c).count()));
        let kind = match (open, fence) {
            (None, Some((c, n))) if n >= 3 => {
                open = Some((c, n, no));
                blocks.push(Block {
                    line: no,
                    info: t[n..].trim().to_string(),
                });
                Kind::Fence
            }
            (Some((c, n, _)), Some((c2, n2))) if c2 == c && n2 >= n && n2 == t.chars().count() => {
                open = None;
                Kind::Fence
            }
            (Some(_), _) => Kind::Code,
            (None, _) => Kind::Prose,
        };
        lines.push(Line {
            no,
            text: raw.to_string(),
            kind,
        });
    }
    Doc {
        name,
        lines,
        blocks,
        unclosed: open.map(|(_, _, at)| at),
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Heading {
    level: usize,
    text: String,
    /// The line of the heading (in README.zh-CN.md: of the Chinese heading above the marker).
    line: usize,
}

impl Heading {
    fn show(&self) -> String {
        format!("`{} {}`", "#".repeat(self.level), self.text)
    }
}

/// A `##` or `###` heading outside code blocks: its level and text.
fn heading(line: &Line) -> Option<(usize, String)> {
    if line.kind != Kind::Prose {
        return None;
    }
    let level = line.text.chars().take_while(|c| *c == '#').count();
    let rest = &line.text[level..];
    ((level == 2 || level == 3) && rest.starts_with(' ')).then(|| (level, rest.trim().to_string()))
}

/// The English heading a `<!-- en: ... -->` line names.
fn marker(line: &Line) -> Option<String> {
    if line.kind != Kind::Prose {
        return None;
    }
    let t = line.text.trim();
    let inner = t.strip_prefix("<!-- en:")?.strip_suffix("-->")?;
    Some(inner.trim().to_string())
}

fn english_headings(doc: &Doc) -> Vec<Heading> {
    doc.lines
        .iter()
        .filter_map(|l| {
            heading(l).map(|(level, text)| Heading {
                level,
                text,
                line: l.no,
            })
        })
        .collect()
}

/// The (level, English text) of every `##`/`###` heading of the Chinese README, read from the
/// marker right below it; a heading without its marker, and a marker anywhere else, are
/// problems.
fn marked_headings(doc: &Doc) -> (Vec<Heading>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in doc.lines.iter().enumerate() {
        if let Some((level, text)) = heading(l) {
            match doc.lines.get(i + 1).and_then(marker) {
                Some(en) => out.push(Heading {
                    level,
                    text: en,
                    line: l.no,
                }),
                None => problems.push(format!(
                    "{}:{}: the heading `{} {text}` has no `<!-- en: ... -->` marker on the next \
                     line: add one that names its README.md heading exactly, e.g. \
                     `<!-- en: Two commands -->` below `## 两条命令`",
                    doc.name,
                    l.no,
                    "#".repeat(level),
                )),
            }
        } else if let Some(en) = marker(l) {
            let after_heading = i > 0 && heading(&doc.lines[i - 1]).is_some();
            if !after_heading {
                problems.push(format!(
                    "{}:{}: the marker `<!-- en: {en} -->` does not directly follow a `##` or \
                     `###` heading: move it to the line right below its heading",
                    doc.name, l.no,
                ));
            }
        }
    }
    (out, problems)
}

/// What differs between README.md's headings and the Chinese README's marked ones, with a hint
/// of how to fix each: a longest common subsequence of (level, text) lines the two up; of what
/// is left over, a name found on both sides is out of order or at the wrong level, and within
/// one gap between matched headings, leftovers of the same level pair up as a wrong marker.
fn compare_headings(en: &[Heading], zh: &[Heading]) -> Vec<String> {
    let same = |a: &Heading, b: &Heading| a.level == b.level && a.text == b.text;
    let (n, m) = (en.len(), zh.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(&en[i], &zh[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The unmatched headings of each gap between two matched ones: (README.md's, ours).
    let mut gaps: Vec<(Vec<&Heading>, Vec<&Heading>)> = vec![(Vec::new(), Vec::new())];
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        let gap = gaps.last_mut().expect("one gap at least");
        if i < n && j < m && same(&en[i], &zh[j]) {
            gaps.push((Vec::new(), Vec::new()));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            gap.0.push(&en[i]);
            i += 1;
        } else {
            gap.1.push(&zh[j]);
            j += 1;
        }
    }
    let mut problems = Vec::new();
    let hashes = |h: &Heading| "#".repeat(h.level);
    // The same name on both sides, in different gaps or at different levels.
    let found: Vec<(usize, usize)> = gaps
        .iter()
        .enumerate()
        .flat_map(|(g, (e, _))| (0..e.len()).map(move |k| (g, k)))
        .collect();
    let mut taken_en = Vec::new();
    for (g, k) in found {
        let e = gaps[g].0[k];
        let hit = gaps
            .iter()
            .enumerate()
            .find_map(|(g2, (_, z))| z.iter().position(|z| z.text == e.text).map(|k2| (g2, k2)));
        let Some((g2, k2)) = hit else { continue };
        let z = gaps[g2].1.remove(k2);
        taken_en.push((g, k));
        problems.push(if z.level == e.level {
            format!(
                "{EN}:{} {} is at {ZH}:{}, but out of order: move that section so the sections \
                 come in README.md's order",
                e.line,
                e.show(),
                z.line,
            )
        } else {
            format!(
                "{EN}:{} {} is a level-{} heading, but its counterpart at {ZH}:{} is level {}: \
                 make it `{}`",
                e.line,
                e.show(),
                e.level,
                z.line,
                z.level,
                hashes(e),
            )
        });
    }
    for (g, (e, z)) in gaps.iter_mut().enumerate() {
        let mut k = 0;
        e.retain(|_| {
            k += 1;
            !taken_en.contains(&(g, k - 1))
        });
        // What is left in one gap at one level: the marker names the wrong heading.
        while let Some(a) = e.first().copied() {
            let Some(b) = z.iter().position(|z| z.level == a.level) else {
                break;
            };
            let b = z.remove(b);
            e.remove(0);
            problems.push(format!(
                "{ZH}:{}: the marker `<!-- en: {} -->` stands where README.md has {} (line {}): \
                 correct the marker to `<!-- en: {} -->` (or, if the section is really another \
                 one, bring the sections in line)",
                b.line + 1,
                b.text,
                a.show(),
                a.line,
                a.text,
            ));
        }
        for a in e.iter() {
            problems.push(format!(
                "{EN}:{} {} has no counterpart in {ZH}: add a `{}` heading at the same place, \
                 with `<!-- en: {} -->` on the line below it",
                a.line,
                a.show(),
                hashes(a),
                a.text,
            ));
        }
        for b in z.iter() {
            problems.push(format!(
                "{ZH}:{}: the `{}` heading marked `<!-- en: {} -->` matches no heading of {EN}: \
                 correct the marker to the English heading's exact text, or remove the section \
                 if README.md no longer has it",
                b.line,
                hashes(b),
                b.text,
            ));
        }
    }
    problems
}

/// A command line of a code block, normalized (trimmed, without a leading `$ `, without a
/// trailing `# comment`, runs of spaces collapsed), or `None` for any other line. `sudo` stays
/// part of the command: `sudo systemctl …` and `systemctl …` are not the same instruction.
fn command(code_line: &str) -> Option<String> {
    let t = code_line.trim();
    let t = t.strip_prefix("$ ").unwrap_or(t).trim_start();
    let bare = t.strip_prefix("sudo ").unwrap_or(t).trim_start();
    if !COMMAND_STARTS
        .iter()
        .any(|s| t.starts_with(s) || bare.starts_with(s))
    {
        return None;
    }
    // A comment starts at a `#` at the start of a word (`#` inside a word, e.g. a URL's
    // fragment, is not one).
    let mut cut = t.len();
    let mut prev_space = true;
    for (k, c) in t.char_indices() {
        if c == '#' && prev_space {
            cut = k;
            break;
        }
        prev_space = c.is_whitespace();
    }
    let cmd = t[..cut].split_whitespace().collect::<Vec<_>>().join(" ");
    (!cmd.is_empty()).then_some(cmd)
}

/// Every command of the document's code blocks, with the lines it is on.
fn commands(doc: &Doc) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for l in doc.lines.iter().filter(|l| l.kind == Kind::Code) {
        if let Some(c) = command(&l.text) {
            out.entry(c).or_default().push(l.no);
        }
    }
    out
}

fn compare_commands(en: &Doc, zh: &Doc) -> Vec<String> {
    let (ce, cz) = (commands(en), commands(zh));
    let lines = |v: &[usize]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    for (cmd, at) in &ce {
        match cz.get(cmd) {
            None => problems.push(format!(
                "missing from {ZH}: `{cmd}` ({EN} line {}): copy it into the matching code block \
                 unchanged (only a trailing `# comment` may be translated)",
                lines(at),
            )),
            Some(zat) if zat.len() != at.len() => problems.push(format!(
                "`{cmd}` is {} time(s) in {EN} (line {}) but {} time(s) in {ZH} (line {}): make \
                 the counts match",
                at.len(),
                lines(at),
                zat.len(),
                lines(zat),
            )),
            Some(_) => {}
        }
    }
    for (cmd, zat) in &cz {
        if !ce.contains_key(cmd) {
            problems.push(format!(
                "missing from {EN}: `{cmd}` ({ZH} line {}): commands must be the English ones, \
                 character for character; fix or remove it",
                lines(zat),
            ));
        }
    }
    problems
}

fn fail_if(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn docs() -> (Doc, Doc) {
    let (en, zh) = (parse(EN, &read(EN)), parse(ZH, &read(ZH)));
    for d in [&en, &zh] {
        if let Some(at) = d.unclosed {
            panic!(
                "{}:{at}: this fenced code block is never closed: add its closing fence",
                d.name
            );
        }
    }
    (en, zh)
}

#[test]
fn the_first_lines_link_the_two_readmes() {
    let (en, zh) = (read(EN), read(ZH));
    let first = en.lines().next().unwrap_or("");
    assert!(
        first.contains("](README.zh-CN.md)"),
        "{EN}'s first line is `{first}`, not a link to {ZH}: insert `{EN_FIRST_LINE}` and a \
         blank line above `# dustgate`"
    );
    let first = zh.lines().next().unwrap_or("");
    assert!(
        first.contains("](README.md)"),
        "{ZH}'s first line is `{first}`, not a link back to {EN}: insert `{ZH_FIRST_LINE}` and \
         a blank line above `# dustgate`"
    );
}

#[test]
fn the_headings_match_section_for_section() {
    let (en, zh) = docs();
    let english = english_headings(&en);
    let (marked, mut problems) = marked_headings(&zh);
    assert!(
        !english.is_empty(),
        "{EN} has no `##` headings: is this the right file?"
    );
    problems.extend(compare_headings(&english, &marked));
    fail_if(
        &problems,
        &format!("{ZH}'s headings are out of step with {EN}'s"),
    );
}

#[test]
fn both_name_the_same_commands() {
    let (en, zh) = docs();
    assert!(
        !commands(&en).is_empty(),
        "no commands found in {EN}'s code blocks"
    );
    fail_if(
        &compare_commands(&en, &zh),
        &format!("the commands in {ZH}'s code blocks differ from {EN}'s"),
    );
}

#[test]
fn both_have_the_same_number_of_code_blocks() {
    let (en, zh) = docs();
    let show = |d: &Doc, b: Option<&Block>| match b {
        Some(b) => format!("{}:{} ```{}", d.name, b.line, b.info),
        None => format!("(nothing in {})", d.name),
    };
    // The first block whose language differs is most likely where one was added or lost.
    let first_odd = (0..en.blocks.len().max(zh.blocks.len()))
        .find(|&k| en.blocks.get(k).map(|b| &b.info) != zh.blocks.get(k).map(|b| &b.info))
        .map(|k| {
            format!(
                "; the first that differs is block {}: {} vs {}",
                k + 1,
                show(&en, en.blocks.get(k)),
                show(&zh, zh.blocks.get(k)),
            )
        })
        .unwrap_or_default();
    assert_eq!(
        en.blocks.len(),
        zh.blocks.len(),
        "{EN} has {} fenced code blocks, {ZH} has {}: every block of {EN} needs its copy in {ZH} \
         at the same place{first_odd}",
        en.blocks.len(),
        zh.blocks.len(),
    );
}

mod parsing {
    use super::*;

    #[test]
    fn a_hash_inside_a_code_block_is_not_a_heading() {
        let doc = parse(
            "t.md",
            "## Real\n\n```bash\n## not a heading\n# nor this\n```\n\n  ```toml\n  ### indented \
             fence\n  ```\n### Also real\n#### too deep\n##tight\n",
        );
        let got: Vec<_> = english_headings(&doc)
            .into_iter()
            .map(|h| (h.level, h.text))
            .collect();
        assert_eq!(got, [(2, "Real".to_string()), (3, "Also real".to_string())]);
        assert_eq!(doc.blocks.len(), 2);
        assert_eq!(doc.blocks[1].info, "toml");
        assert_eq!(doc.unclosed, None);
        assert_eq!(parse("t.md", "```\nnever closed\n").unclosed, Some(1));
    }

    #[test]
    fn a_missing_or_stray_marker_is_reported() {
        let zh = parse(
            ZH,
            "## 两条命令\n<!-- en: Two commands -->\n\n## 配置\n\n<!-- en: Configuring a real \
             site -->\n### 键\n<!-- en: Keys -->\n",
        );
        let (marked, problems) = marked_headings(&zh);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("README.zh-CN.md:4: the heading `## 配置` has no"));
        assert!(problems[1].starts_with("README.zh-CN.md:6: the marker"));
        let en = parse(
            EN,
            "## Two commands\n## Configuring a real site\n### Keys\n",
        );
        let diff = compare_headings(&english_headings(&en), &marked);
        assert_eq!(diff.len(), 1, "{diff:#?}");
        assert!(
            diff[0].contains("`## Configuring a real site` has no counterpart"),
            "{diff:?}"
        );

        // The right name at the wrong level; the right names in the wrong order.
        let en = parse(EN, "## Two commands\n## Keys\n");
        let zh = parse(
            ZH,
            "## 两条\n<!-- en: Two commands -->\n### 键\n<!-- en: Keys -->\n",
        );
        let diff = compare_headings(&english_headings(&en), &marked_headings(&zh).0);
        assert_eq!(diff.len(), 1, "{diff:#?}");
        assert!(
            diff[0].contains("`## Keys` is a level-2 heading"),
            "{diff:#?}"
        );
        let zh = parse(
            ZH,
            "## 键\n<!-- en: Keys -->\n## 两条\n<!-- en: Two commands -->\n",
        );
        let diff = compare_headings(&english_headings(&en), &marked_headings(&zh).0);
        assert_eq!(diff.len(), 1, "{diff:#?}");
        assert!(diff[0].contains("out of order"), "{diff:#?}");
        let zh = parse(
            ZH,
            "## 两条\n<!-- en: Two commands -->\n## 键\n<!-- en: Key -->\n",
        );
        let diff = compare_headings(&english_headings(&en), &marked_headings(&zh).0);
        assert_eq!(diff.len(), 1, "{diff:#?}");
        assert!(diff[0].starts_with("README.zh-CN.md:4: the marker `<!-- en: Key -->` stands"));
    }

    #[test]
    fn commands_are_normalized_and_compared() {
        assert_eq!(
            command("  $ dustgate check  --config site.toml"),
            Some("dustgate check --config site.toml".into())
        );
        assert_eq!(
            command("cargo run --release -- demo   # 演示"),
            Some("cargo run --release -- demo".into())
        );
        assert_eq!(
            command("sudo systemctl restart grafana-server"),
            Some("sudo systemctl restart grafana-server".into())
        );
        assert_eq!(
            command("curl http://127.0.0.1:8080/#x  # a fragment is kept"),
            Some("curl http://127.0.0.1:8080/#x".into())
        );
        assert_eq!(command("INFLUX_TOKEN=... dustgate run"), None);
        assert_eq!(command("# dustgate in a comment"), None);
        assert_eq!(command("name = \"dustgate\""), None);

        let en = parse(
            EN,
            "```bash\ndustgate check # en\nscripts/test\nscripts/test\n```\n",
        );
        let zh = parse(
            ZH,
            "```bash\ndustgate check # 中文\nscripts/test\ncargo test\n```\n",
        );
        let problems = compare_commands(&en, &zh);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("`scripts/test` is 2 time(s) in README.md"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("missing from README.md: `cargo test`"),
            "{problems:#?}"
        );
    }
}
